"""The ledger of one application as a detached, named Ray actor that publishes usage as gauges.

Replicas find it by name (`gale-ledger-<application>` in the `gale` namespace),
creating it if it does not exist, so it needs no entry in the Serve config and
outlives rolling updates, redeploys and every replica's death. It stops itself
once its application has been gone from Serve for `GONE_S` (docs/limits.md says
why an actor rather than a second Serve deployment).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.util.metrics import Gauge

from serving import metrics as names
from serving.ledger import HOUR, Ledger, Report, Snapshot

NAMESPACE = "gale"
# Seconds between checks that the application still exists, and how long it may be gone.
CHECK_S = 60.0
GONE_S = 3600.0
logger = logging.getLogger(__name__)


def ledger_name(application: str) -> str:
    """The actor's name for an application."""
    return f"gale-ledger-{application}"


def hour_label(hour: int) -> str:
    """An hour (since the epoch) as its UTC start, e.g. 2026-12-02T09."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hour * HOUR))


@ray.remote(num_cpus=0, max_restarts=-1)
class LedgerActor:
    """One application's `Ledger`; its usage is exported through Ray's metrics."""

    def __init__(self, application: str) -> None:
        self.application = application
        self.ledger = Ledger()
        usage = (names.DEPLOYMENT, names.KEY, names.HOUR)
        self.requests = Gauge(
            names.USAGE_REQUESTS, "Requests served in the hour, by key.", tag_keys=usage
        )
        self.prompt = Gauge(
            names.USAGE_PROMPT_TOKENS, "Prompt tokens in the hour, by key.", tag_keys=usage
        )
        self.completion = Gauge(
            names.USAGE_COMPLETION_TOKENS, "Completion tokens in the hour, by key.", tag_keys=usage
        )
        self.seconds = Gauge(
            names.USAGE_REPLICA_SECONDS,
            "Replica-seconds in the hour, by hardware profile.",
            tag_keys=(names.DEPLOYMENT, names.HARDWARE, names.HOUR),
        )
        self.used = Gauge(
            names.KEY_TOKENS_USED,
            "Tokens each key has used in all (its token budget's use).",
            tag_keys=(names.DEPLOYMENT, names.KEY),
        )
        self._watch: asyncio.Task[None] | None = None

    async def acquire(
        self, key_id: str, window_s: int, window: int, allowance: int, replica: str
    ) -> int:
        """`Ledger.acquire`."""
        return self.ledger.acquire(key_id, window_s, window, allowance, replica)

    async def sync(self, report: Report) -> Snapshot:
        """`Ledger.sync`, then publish what changed."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_application())
        snapshot = self.ledger.sync(report)
        hour = int(self.ledger.clock() // HOUR)
        label = hour_label(hour)
        for key_id, counts in report.keys.items():
            if not (counts.served or counts.prompt or counts.completion):
                continue
            usage = self.ledger.usage[key_id, hour]
            tags = {names.DEPLOYMENT: self.application, names.KEY: key_id, names.HOUR: label}
            self.requests.set(usage.requests, tags)
            self.prompt.set(usage.prompt, tags)
            self.completion.set(usage.completion, tags)
            self.used.set(
                self.ledger.used[key_id], {names.DEPLOYMENT: self.application, names.KEY: key_id}
            )
        self.seconds.set(
            self.ledger.replica_seconds[report.hardware, hour],
            {
                names.DEPLOYMENT: self.application,
                names.HARDWARE: report.hardware,
                names.HOUR: label,
            },
        )
        return snapshot

    async def _watch_application(self) -> None:
        """Prune old counts; stop once the application has been gone for GONE_S."""
        gone_since: float | None = None
        while True:
            await asyncio.sleep(CHECK_S)
            self.ledger.prune()
            try:
                present = await asyncio.to_thread(self._application_exists)
            except Exception as error:  # Serve's controller restarting: look again later
                logger.warning("gale ledger: could not read Serve's status: %s", error)
                continue
            now = time.monotonic()
            gone_since = None if present else (gone_since or now)
            if gone_since is not None and now - gone_since > GONE_S:
                me = ray.get_runtime_context().current_actor
                await asyncio.to_thread(ray.kill, me, no_restart=True)

    def _application_exists(self) -> bool:
        from ray import serve

        return self.application in serve.status().applications


class RayLedger:
    """A replica's `LedgerClient`: calls on the application's ledger actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    @classmethod
    def for_application(cls, application: str) -> RayLedger:
        """The application's ledger, created if this is the first replica to ask (blocking)."""
        handle = LedgerActor.options(  # type: ignore[attr-defined]
            name=ledger_name(application),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        ).remote(application)
        return cls(handle)

    async def acquire(
        self, key_id: str, window_s: int, window: int, allowance: int, replica: str
    ) -> int:
        """Ask the actor for requests of a key in a window."""
        granted: int = await self.handle.acquire.remote(
            key_id, window_s, window, allowance, replica
        )
        return granted

    async def sync(self, report: Report) -> Snapshot:
        """Send the actor a report."""
        snapshot: Snapshot = await self.handle.sync.remote(report)
        return snapshot
