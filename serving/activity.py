"""The engine's activity as gauges: requests queued, batch occupancy, cache use.

A replica samples `Engine.activity()` once a second on its event loop and sets
its gauges (`serving.ray_metrics.RayEngineGauges`), off the request path: no
request pays for them, and Ray exports gauges every few seconds anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from serving.engines.base import Activity, Engine

SAMPLE_EVERY_S = 1.0
logger = logging.getLogger("ray.serve")


class ActivityGauges(Protocol):
    """Where sampled activity goes."""

    def engine_activity(self, deployment: str, activity: Activity) -> None:
        """The engine's activity now."""


@dataclass
class MemoryGauges:
    """Keeps every sample (tests)."""

    samples: list[tuple[str, Activity]] = field(default_factory=list)

    def engine_activity(self, deployment: str, activity: Activity) -> None:
        """Keep it."""
        self.samples.append((deployment, activity))


async def sample_activity(
    engine: Engine,
    deployment: Callable[[], str],
    gauges: ActivityGauges,
    every: float = SAMPLE_EVERY_S,
) -> None:
    """Record the engine's activity every `every` seconds until cancelled."""
    warned = False
    while True:
        try:
            found = engine.activity()
            if found is not None:
                gauges.engine_activity(deployment(), found)
        except Exception as error:  # a gauge must never take the replica down
            if not warned:
                logger.warning("gale: could not sample the engine's activity: %s", error)
                warned = True
        await asyncio.sleep(every)
