"""The health check's decisions (serving.health) against an engine whose behaviour is set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from serving.engines.base import Activity, Chunk, Engine, SamplingParams
from serving.health import EngineUnhealthy, Progress, check_engine

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Engine_(Engine):
    """Generates one token at once, never, or with an error; reports the activity it is given."""

    model_id, context_length, vocab_size = "fake", 100, 10
    device, device_description = "cpu", "fake"

    def __init__(self, behaviour: str = "works", activity: Activity | None = None) -> None:
        self.behaviour, self._activity, self.probes = behaviour, activity, 0

    @property
    def batch_size(self) -> int:
        return 2

    def set_batch_size(self, size: int) -> None:
        raise NotImplementedError

    def activity(self) -> Activity | None:
        return self._activity

    def encode_chat(self, messages: Sequence[object], tools: object = None) -> list[int]:
        raise NotImplementedError

    def encode_text(self, prompt: str) -> list[int]:
        raise NotImplementedError

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        self.probes += 1
        assert params.max_tokens == 1
        if self.behaviour == "stuck":
            await asyncio.Event().wait()
        if self.behaviour == "fails":
            raise RuntimeError("the engine core died")
        yield Chunk("x", finish_reason="length", prompt_tokens=1, completion_tokens=1)

    async def close(self) -> None:
        pass


IDLE = Activity(queued=0, running=0, batch_size=2)
FULL = Activity(queued=3, running=2, batch_size=2)


async def test_recent_answers_prove_the_engine_works_without_a_probe() -> None:
    clock = Clock()
    progress = Progress(clock)
    engine = Engine_("stuck", IDLE)
    clock.now += 5
    await check_engine(engine, progress, [1], quiet_s=10)
    assert engine.probes == 0


async def test_a_quiet_idle_engine_is_probed_and_the_probe_counts_as_progress() -> None:
    clock = Clock()
    progress = Progress(clock)
    engine = Engine_("works", IDLE)
    clock.now += 60
    await check_engine(engine, progress, [1], quiet_s=10)
    assert engine.probes == 1 and progress.quiet_for() == 0


async def test_a_stuck_engine_fails_the_check_at_the_deadline() -> None:
    progress = Progress(Clock())
    progress.last -= 60
    with pytest.raises(EngineUnhealthy, match="did not finish within 0.05 s"):
        await check_engine(Engine_("stuck", None), progress, [1], deadline_s=0.05)


async def test_an_engine_error_fails_the_check_naming_it() -> None:
    progress = Progress(Clock())
    progress.last -= 60
    with pytest.raises(EngineUnhealthy, match="engine core died"):
        await check_engine(Engine_("fails", IDLE), progress, [1])


async def test_a_full_engine_is_not_probed_until_answers_stall() -> None:
    clock = Clock()
    progress = Progress(clock)
    engine = Engine_("stuck", FULL)
    clock.now += 60
    await check_engine(engine, progress, [1], stall_s=120)  # busy, answers moved a minute ago
    assert engine.probes == 0
    clock.now += 61
    with pytest.raises(EngineUnhealthy, match="no answer moved for 121 s with 2 requests running"):
        await check_engine(engine, progress, [1], stall_s=120)
    assert engine.probes == 0
