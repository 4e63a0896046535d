"""The latest of vLLM's scheduler stats, kept for the replica's gauges.

`AsyncLLM` hands every step's `SchedulerStats` (running and waiting requests,
KV-cache use) to the stat loggers it was started with; this one only keeps the
latest, which `VLLMEngine.activity()` reads. Imported only where vllm is.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase


class LatestStats:
    """Where the logger leaves the latest scheduler stats (read from any thread)."""

    def __init__(self) -> None:
        self.scheduler: Any = None

    def logger_factory(self) -> type[StatLoggerBase]:
        """A stat logger class for `AsyncLLM(stat_loggers=[...])` that writes here."""
        holder = self

        class KeepLatest(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is not None:
                    holder.scheduler = scheduler_stats

            def log_engine_initialized(self) -> None:
                pass

        return KeepLatest
