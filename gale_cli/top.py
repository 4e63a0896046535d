"""What `gale top` shows: each deployment's replicas, traffic and latency, from two reads.

Replica counts come from the Serve REST API; rates and latency percentiles from
the difference between two reads of the replicas' metrics (`MetricsReader`), so
they describe the interval between the reads. A counter that went down between
them (a replica restarted) counts from zero.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gale_cli.cluster import ServeClient
from gale_cli.metrics_reader import MetricsReader, Sample
from serving import metrics, serve_config


@dataclass(frozen=True)
class Reading:
    """The cluster's applications and gale's metric samples at one moment."""

    at: float
    applications: dict[str, Any]
    samples: list[Sample]


class Top:
    """Takes readings of the cluster for `gale top`."""

    def __init__(
        self,
        client: ServeClient,
        reader: MetricsReader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.reader, self.clock = client, reader, clock

    def read(self) -> Reading:
        """One reading: applications, then metrics."""
        applications = self.client.get_applications().get("applications") or {}
        return Reading(self.clock(), applications, self.reader.samples())


def _key(sample: Sample) -> tuple[str, frozenset[tuple[str, str]]]:
    return sample.name, frozenset(sample.labels.items())


def _deltas(before: Reading, after: Reading) -> list[Sample]:
    """Each series' increase between the readings (from zero where it went down)."""
    earlier = {_key(sample): sample.value for sample in before.samples}
    found = []
    for sample in after.samples:
        start = earlier.get(_key(sample), 0.0)
        grown = sample.value - start if sample.value >= start else sample.value
        found.append(Sample(sample.name, sample.labels, grown))
    return found


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: `q` of cumulative (upper bound, count) buckets."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the highest finite bound: all that can be said
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _replicas(app: dict[str, Any]) -> dict[str, int]:
    # The model's replicas (the ingress is one replica in front of them, not counted).
    deployment = serve_config.model_status(app)
    states = [r.get("state") for r in deployment.get("replicas") or []]
    config = deployment.get("deployment_config") or {}
    scaling = config.get("autoscaling_config") or {}
    fixed = config.get("num_replicas")
    fixed = fixed if isinstance(fixed, int) else 0  # "auto" or absent when autoscaling
    return {
        "running": states.count("RUNNING"),
        "target": deployment.get("target_num_replicas") or 0,
        "min": scaling.get("min_replicas", fixed) if scaling else fixed,
        "max": scaling.get("max_replicas", fixed) if scaling else fixed,
    }


def _is_gale(app: dict[str, Any]) -> bool:
    return serve_config.DEPLOYMENT_NAME in (app.get("deployments") or {})


def summarize(before: Reading, after: Reading, name: str | None = None) -> list[dict[str, Any]]:
    """One row per gale deployment (or only `name`): replicas, rates, latency, errors."""
    seconds = max(after.at - before.at, 1e-9)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in _deltas(before, after):
        deployment = sample.labels.get(metrics.DEPLOYMENT, "")
        if sample.name == metrics.REQUESTS:
            status = int(sample.labels.get(metrics.STATUS) or 0)
            kind = "errors" if status >= 500 else "refused" if status >= 400 else "ok"
            sums[deployment, kind] += sample.value
        elif sample.name.endswith("_bucket"):
            bound = float(sample.labels.get("le", "inf"))
            buckets[deployment, sample.name.removesuffix("_bucket")][bound] += sample.value
        else:
            sums[deployment, sample.name] += sample.value
    gauges: dict[tuple[str, str], list[float]] = defaultdict(list)
    for sample in after.samples:
        deployment = sample.labels.get(metrics.DEPLOYMENT, "")
        if sample.name == metrics.RUNNING:
            sums[deployment, "running"] += sample.value
        elif sample.name in (metrics.QUEUED, metrics.OCCUPANCY, metrics.CACHE_USAGE):
            gauges[deployment, sample.name].append(sample.value)  # one per replica
        elif sample.name.endswith("_bucket"):
            bound = float(sample.labels.get("le", "inf"))
            totals[deployment, sample.name.removesuffix("_bucket")][bound] += sample.value

    def latency(deployment: str, metric: str) -> dict[str, float | None]:
        # The interval's requests; with none in it, every request since the replicas started.
        recent = buckets.get((deployment, metric), {})
        chosen = (
            recent if recent and max(recent.values()) > 0 else totals.get((deployment, metric), {})
        )
        return {"p50": quantile(0.5, chosen.items()), "p95": quantile(0.95, chosen.items())}

    def mean(deployment: str, metric: str) -> float | None:
        values = gauges.get((deployment, metric))
        return sum(values) / len(values) if values else None

    rows = []
    for app_name, app in sorted(after.applications.items()):
        if not _is_gale(app) or (name is not None and app_name != name):
            continue
        requests = sum(sums[app_name, kind] for kind in ("ok", "refused", "errors"))
        rows.append(
            {
                "name": app_name,
                "status": app.get("status", "UNKNOWN"),
                "replicas": _replicas(app),
                "requests_running": int(sums[app_name, "running"]),
                "requests_queued": int(sum(gauges.get((app_name, metrics.QUEUED), []))),
                "batch_occupancy": mean(app_name, metrics.OCCUPANCY),
                "cache_usage": mean(app_name, metrics.CACHE_USAGE),
                "requests_per_s": requests / seconds,
                "prompt_tokens_per_s": sums[app_name, metrics.PROMPT_TOKENS] / seconds,
                "completion_tokens_per_s": sums[app_name, metrics.COMPLETION_TOKENS] / seconds,
                "time_to_first_token_s": latency(app_name, metrics.TIME_TO_FIRST_TOKEN),
                "time_per_output_token_s": latency(app_name, metrics.TIME_PER_OUTPUT_TOKEN),
                "errors_per_s": sums[app_name, "errors"] / seconds,
                "refused_per_s": sums[app_name, "refused"] / seconds,
                "interval_s": seconds,
            }
        )
    return rows
