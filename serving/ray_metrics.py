"""`Metrics` through Ray's metrics API, exported by every node in Prometheus format.

Ray serves them on each node's metrics export port with its `ray_` prefix
(`gale_requests` is scraped as `ray_gale_requests_total`) and adds its own
labels (node, worker, session), so each replica's series stay apart; sum them
over `deployment` and `key_id`.
"""

from __future__ import annotations

from collections import Counter as Tally

from ray.util.metrics import Counter, Gauge, Histogram

from serving import metrics as names
from serving.engines.base import Activity

_LABELS = (names.DEPLOYMENT, names.KEY)


class RayMetrics:
    """Records through `ray.util.metrics`; create one per replica process."""

    def __init__(self) -> None:
        self._requests = Counter(
            names.REQUESTS,
            "Requests answered, by HTTP status.",
            tag_keys=(*_LABELS, names.STATUS),
        )
        self._prompt = Counter(names.PROMPT_TOKENS, "Prompt tokens processed.", tag_keys=_LABELS)
        self._completion = Counter(
            names.COMPLETION_TOKENS, "Completion tokens generated.", tag_keys=_LABELS
        )
        self._ttft = Histogram(
            names.TIME_TO_FIRST_TOKEN,
            "Seconds from a streamed request's arrival to its first token.",
            boundaries=list(names.TTFT_BUCKETS),
            tag_keys=_LABELS,
        )
        self._tpot = Histogram(
            names.TIME_PER_OUTPUT_TOKEN,
            "Mean seconds per output token after the first, per streamed request.",
            boundaries=list(names.TPOT_BUCKETS),
            tag_keys=_LABELS,
        )
        self._duration = Histogram(
            names.REQUEST_DURATION,
            "Seconds from a request's arrival to the end of its response.",
            boundaries=list(names.DURATION_BUCKETS),
            tag_keys=_LABELS,
        )
        self._running = Gauge(
            names.RUNNING, "Requests this replica is serving now.", tag_keys=(names.DEPLOYMENT,)
        )
        self._running_now: Tally[str] = Tally()

    def request_started(self, deployment: str) -> None:
        """One more running."""
        self._running_now[deployment] += 1
        self._running.set(self._running_now[deployment], {names.DEPLOYMENT: deployment})

    def request_finished(self, deployment: str, key_id: str, status: int, seconds: float) -> None:
        """Count it by status, observe its duration; one fewer running."""
        self._running_now[deployment] -= 1
        self._running.set(self._running_now[deployment], {names.DEPLOYMENT: deployment})
        labels = {names.DEPLOYMENT: deployment, names.KEY: key_id}
        self._requests.inc(1, {**labels, names.STATUS: str(status)})
        self._duration.observe(seconds, labels)

    def tokens(self, deployment: str, key_id: str, prompt: int, completion: int) -> None:
        """Add the tokens."""
        labels = {names.DEPLOYMENT: deployment, names.KEY: key_id}
        if prompt:
            self._prompt.inc(prompt, labels)
        if completion:
            self._completion.inc(completion, labels)

    def first_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Observe a time to first token."""
        self._ttft.observe(seconds, {names.DEPLOYMENT: deployment, names.KEY: key_id})

    def per_output_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Observe a time per output token."""
        self._tpot.observe(seconds, {names.DEPLOYMENT: deployment, names.KEY: key_id})


class RayEngineGauges:
    """The engine's activity (`serving.activity`) as Ray gauges, labelled by deployment."""

    def __init__(self) -> None:
        labels = (names.DEPLOYMENT,)
        self._queued = Gauge(
            names.QUEUED, "Requests waiting for a batch slot in this replica.", tag_keys=labels
        )
        self._occupancy = Gauge(
            names.OCCUPANCY, "Rows in the running batch over the batch size.", tag_keys=labels
        )
        self._cache = Gauge(
            names.CACHE_USAGE,
            "Fraction of the engine's KV cache in use (engines that report it).",
            tag_keys=labels,
        )

    def engine_activity(self, deployment: str, activity: Activity) -> None:
        """Set the gauges to the engine's activity now."""
        labels = {names.DEPLOYMENT: deployment}
        self._queued.set(activity.queued, labels)
        self._occupancy.set(activity.occupancy, labels)
        if activity.cache_usage is not None:
            self._cache.set(activity.cache_usage, labels)


class RayIngressCounters:
    """The ingress's retries and broken answers as Ray counters, labelled by deployment."""

    def __init__(self) -> None:
        labels = (names.DEPLOYMENT,)
        self._retries = Counter(
            names.INGRESS_RETRIES,
            "Requests called again because their replica was lost before answering.",
            tag_keys=labels,
        )
        self._broken = Counter(
            names.INGRESS_BROKEN,
            "Answers that broke off after they started (their replica was lost).",
            tag_keys=labels,
        )

    def retried(self, deployment: str, count: int) -> None:
        """Count retries of one request."""
        if count:
            self._retries.inc(count, {names.DEPLOYMENT: deployment})

    def broke(self, deployment: str) -> None:
        """Count one broken answer."""
        self._broken.inc(1, {names.DEPLOYMENT: deployment})
