"""The engine's activity gauges: sampled off the request path, and the switch that turns metrics off."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from serving import metrics
from serving.activity import MemoryGauges, sample_activity
from serving.engines.base import Activity


class Busy:
    """An engine whose activity changes between samples (and fails once)."""

    def __init__(self) -> None:
        self.calls = 0

    def activity(self) -> Activity | None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("a moment of trouble")
        return Activity(queued=self.calls, running=2, batch_size=8)


def test_activity_is_sampled_until_cancelled_and_survives_an_error() -> None:
    gauges = MemoryGauges()

    async def run() -> None:
        task = asyncio.create_task(sample_activity(Busy(), lambda: "smol", gauges, every=0.01))  # type: ignore[arg-type]
        while len(gauges.samples) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    deployments = {name for name, _ in gauges.samples}
    assert deployments == {"smol"}
    queued = [activity.queued for _, activity in gauges.samples]
    assert queued[:3] == [1, 3, 4]  # the second sample failed and was skipped
    assert gauges.samples[0][1].occupancy == 0.25


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("on", True), ("off", False), ("0", False), ("False", False)]
)
def test_gale_metrics_off_turns_metrics_off(value: str | None, on: bool) -> None:
    environ = {} if value is None else {metrics.ENABLED_ENV: value}
    assert metrics.enabled(environ) is on


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_vllms_scheduler_stats_are_kept_for_the_cache_gauge() -> None:
    from vllm.v1.metrics.stats import SchedulerStats

    from serving.engines.vllm_stats import LatestStats

    latest = LatestStats()
    logger = latest.logger_factory()(None, 0)
    logger.record(None, None)
    assert latest.scheduler is None
    stats = SchedulerStats(num_running_reqs=3, num_waiting_reqs=1, kv_cache_usage=0.42)
    logger.record(scheduler_stats=stats, iteration_stats=None, mm_cache_stats=None, engine_idx=0)
    assert latest.scheduler.kv_cache_usage == 0.42
