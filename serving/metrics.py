"""What gale measures on a replica, behind one small interface the API records through.

The app (`serving.api`) takes a `Metrics` as a constructor argument: `NoMetrics`
records nothing, `MemoryMetrics` counts in memory (tests, and anything without
Ray), and `serving.ray_metrics.RayMetrics` exports through Ray's metrics, which
every node serves in Prometheus format. Every series is labelled by deployment
and by API key id (the key record's id, never the key; `NO_KEY` when a request
named no valid key).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# Metric names, shared by the exporter and by readers of its Prometheus text.
REQUESTS = "gale_requests"
PROMPT_TOKENS = "gale_prompt_tokens"
COMPLETION_TOKENS = "gale_completion_tokens"
TIME_TO_FIRST_TOKEN = "gale_time_to_first_token_seconds"
TIME_PER_OUTPUT_TOKEN = "gale_time_per_output_token_seconds"
REQUEST_DURATION = "gale_request_duration_seconds"
RUNNING = "gale_requests_running"
QUEUED = "gale_requests_queued"
OCCUPANCY = "gale_batch_occupancy"
CACHE_USAGE = "gale_engine_cache_usage"
DEPLOYMENT, KEY, STATUS = "deployment", "key_id", "status"
# Usage kept by each deployment's ledger (serving.ledger_actor): gauges holding the
# running total of one UTC hour (`hour`: its start, e.g. 2026-12-02T09) so counts
# outlive the replicas that made them.
USAGE_REQUESTS = "gale_usage_requests"
USAGE_PROMPT_TOKENS = "gale_usage_prompt_tokens"
USAGE_COMPLETION_TOKENS = "gale_usage_completion_tokens"
USAGE_REPLICA_SECONDS = "gale_usage_replica_seconds"
# Tokens each key has used since the ledger started (what its token budget counts).
KEY_TOKENS_USED = "gale_key_tokens_used"
HOUR, HARDWARE = "hour", "hardware"
# Kept by each application's ingress (serving.ingress): requests it called again because
# their replica was lost before answering, and answers that broke off after they started.
INGRESS_RETRIES = "gale_ingress_retries"
INGRESS_BROKEN = "gale_ingress_broken_answers"
NO_KEY = "none"
# Seconds; small models on CPU answer the first token in tens of ms, large ones in seconds.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# In a replica's environment (e.g. the app's runtime_env), "off" records no metrics at all.
ENABLED_ENV = "GALE_METRICS"


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this replica records metrics (unless GALE_METRICS is off, 0 or false)."""
    value = (os.environ if environ is None else environ).get(ENABLED_ENV, "on")
    return value.strip().lower() not in ("off", "0", "false", "no")


class Metrics(Protocol):
    """Where the app records each request: one call per fact, cheap enough for every request."""

    def request_started(self, deployment: str) -> None:
        """A request entered the app (it counts as running until finished)."""

    def request_finished(self, deployment: str, key_id: str, status: int, seconds: float) -> None:
        """A request's response was sent with this status after this many seconds."""

    def tokens(self, deployment: str, key_id: str, prompt: int, completion: int) -> None:
        """A generation used this many prompt and completion tokens."""

    def first_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """A streamed generation's first token came this long after the request arrived."""

    def per_output_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """A streamed generation's mean time per output token after the first."""


class NoMetrics:
    """Records nothing."""

    def request_started(self, deployment: str) -> None:
        """Nothing."""

    def request_finished(self, deployment: str, key_id: str, status: int, seconds: float) -> None:
        """Nothing."""

    def tokens(self, deployment: str, key_id: str, prompt: int, completion: int) -> None:
        """Nothing."""

    def first_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Nothing."""

    def per_output_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Nothing."""


@dataclass
class MemoryMetrics:
    """Counts in memory, keyed by (deployment, key id[, status])."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    prompt_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    completion_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_tokens: list[tuple[str, str, float]] = field(default_factory=list)
    per_token: list[tuple[str, str, float]] = field(default_factory=list)
    running: Counter[str] = field(default_factory=Counter)

    def request_started(self, deployment: str) -> None:
        """One more running."""
        self.running[deployment] += 1

    def request_finished(self, deployment: str, key_id: str, status: int, seconds: float) -> None:
        """Count it by status; one fewer running."""
        self.running[deployment] -= 1
        self.requests[deployment, key_id, status] += 1

    def tokens(self, deployment: str, key_id: str, prompt: int, completion: int) -> None:
        """Add the tokens."""
        self.prompt_tokens[deployment, key_id] += prompt
        self.completion_tokens[deployment, key_id] += completion

    def first_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Keep the observation."""
        self.first_tokens.append((deployment, key_id, seconds))

    def per_output_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Keep the observation."""
        self.per_token.append((deployment, key_id, seconds))
