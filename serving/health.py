"""Whether a replica's engine still generates: the answer to Serve's health check.

Serve calls a replica's `check_health` every 10 s and replaces the replica when it
raises or takes longer than 30 s. An actor that answers but whose engine is stuck
(a hung llama-server, a wedged vLLM engine core, a dead worker thread) would pass
a check that only asks "are you there?", and every request sent to it would hang.
So the check asks the engine, as cheaply as the replica's traffic allows:

- an answer moved within the last `QUIET_S` (a successful response's body went
  out): the engine works, nothing more to do;
- else, when the engine has room (nothing queued, a free batch slot): a one-token
  generation must finish within `PROBE_DEADLINE_S`;
- else (every slot busy, requests waiting): a probe would queue behind them, so the
  engine is unhealthy only when no answer has moved for `STALL_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from serving.engines.base import Engine, SamplingParams

QUIET_S = 10.0
PROBE_DEADLINE_S = 20.0
"""Below Serve's health_check_timeout_s (30 s), so a stuck engine fails the check itself."""
STALL_S = 120.0


class EngineUnhealthy(RuntimeError):
    """The engine does not generate; Serve replaces the replica."""


class Progress:
    """When this replica last saw an answer move (a successful response's body sent)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last = clock()

    def note(self) -> None:
        self.last = self._clock()

    def quiet_for(self) -> float:
        """Seconds since an answer last moved."""
        return self._clock() - self.last


async def check_engine(
    engine: Engine,
    progress: Progress,
    probe_ids: Sequence[int],
    *,
    quiet_s: float = QUIET_S,
    deadline_s: float = PROBE_DEADLINE_S,
    stall_s: float = STALL_S,
) -> None:
    """Return when the engine generates; raise EngineUnhealthy saying why it does not."""
    quiet = progress.quiet_for()
    if quiet < quiet_s:
        return
    activity = engine.activity()
    if activity is not None and (activity.queued or activity.running >= activity.batch_size):
        if quiet >= stall_s:
            raise EngineUnhealthy(
                f"no answer moved for {quiet:.0f} s with {activity.running} requests running "
                f"and {activity.queued} waiting"
            )
        return
    try:
        async with asyncio.timeout(deadline_s):
            await engine.generate(probe_ids, SamplingParams(max_tokens=1, temperature=0.0))
    except TimeoutError:
        raise EngineUnhealthy(
            f"a one-token generation did not finish within {deadline_s:g} s"
        ) from None
    except Exception as error:
        raise EngineUnhealthy(f"a one-token generation failed: {error}") from error
    progress.note()
