"""gale top's arithmetic, and MetricsReader against a fake dashboard and node (MockTransport)."""

from __future__ import annotations

import httpx
import pytest

from gale_cli.connection import ClusterConfig
from gale_cli.errors import ClusterError
from gale_cli.metrics_reader import MetricsReader, Sample, metrics_urls_from_env, parse_samples
from gale_cli.top import Reading, quantile, summarize

TOKEN = "f" * 64
EXPOSITION = """\
# HELP ray_gale_requests_total Requests answered, by HTTP status.
# TYPE ray_gale_requests_total counter
ray_gale_requests_total{deployment="smol",key_id="key_aaaaaaaaaaaa",status="200",WorkerId="w1"} 7.0
ray_gale_requests_total{deployment="smol",key_id="none",status="401",WorkerId="w1"} 1.0
# HELP ray_other_metric Not gale's.
# TYPE ray_other_metric gauge
ray_other_metric 3.0
"""


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0.0), (0.2, 10.0), (float("inf"), 10.0)], 0.15),
        (0.95, [(0.1, 10.0), (0.2, 10.0), (float("inf"), 10.0)], 0.095),
        (0.5, [(0.1, 0.0), (float("inf"), 4.0)], 0.1),  # all above the last finite bound
        (0.5, [(0.1, 0.0), (float("inf"), 0.0)], None),  # no observations
        (0.5, [], None),
    ],
)
def test_quantile_interpolates_like_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = quantile(q, buckets)
    assert found == pytest.approx(expected) if expected is not None else found is None


APP = {
    "status": "RUNNING",
    "deployments": {
        "GaleModel": {
            "target_num_replicas": 2,
            "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}],
            "deployment_config": {
                "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
            },
        }
    },
}
FOREIGN = {"status": "RUNNING", "deployments": {"Other": {"replicas": []}}}


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, {"deployment": "smol", "key_id": "k", **labels}, value)


def test_summary_rates_and_latency_over_the_interval() -> None:
    apps = {"smol": APP, "foreign": FOREIGN}
    before = Reading(
        10.0,
        apps,
        [
            sample("gale_requests", 5, status="200"),
            sample("gale_requests", 50, status="200", WorkerId="restarted"),
            sample("gale_completion_tokens", 100),
            sample("gale_time_to_first_token_seconds_bucket", 3, le="0.1"),
            sample("gale_time_to_first_token_seconds_bucket", 3, le="0.2"),
            sample("gale_time_to_first_token_seconds_bucket", 3, le="+Inf"),
        ],
    )
    after = Reading(
        12.0,
        apps,
        [
            sample("gale_requests", 9, status="200"),
            sample("gale_requests", 2, status="200", WorkerId="restarted"),  # counts from zero
            sample("gale_requests", 2, status="503"),
            sample("gale_requests", 1, status="401"),
            sample("gale_completion_tokens", 160),
            sample("gale_requests_running", 3, WorkerId="a"),
            sample("gale_requests_running", 1, WorkerId="b"),
            sample("gale_requests_queued", 5, WorkerId="a"),
            sample("gale_requests_queued", 2, WorkerId="b"),
            sample("gale_batch_occupancy", 1.0, WorkerId="a"),
            sample("gale_batch_occupancy", 0.5, WorkerId="b"),
            sample("gale_time_to_first_token_seconds_bucket", 3, le="0.1"),
            sample("gale_time_to_first_token_seconds_bucket", 5, le="0.2"),
            sample("gale_time_to_first_token_seconds_bucket", 5, le="+Inf"),
        ],
    )
    [row] = summarize(before, after)
    assert row["name"] == "smol"
    assert row["replicas"] == {"running": 1, "target": 2, "min": 1, "max": 4}
    assert row["requests_per_s"] == pytest.approx((4 + 2 + 2 + 1) / 2)
    assert row["errors_per_s"] == pytest.approx(1.0)
    assert row["refused_per_s"] == pytest.approx(0.5)
    assert row["completion_tokens_per_s"] == pytest.approx(30.0)
    assert row["requests_running"] == 4
    # Queues add up over the replicas; occupancy is their mean; no engine reported a cache.
    assert row["requests_queued"] == 7
    assert row["batch_occupancy"] == pytest.approx(0.75)
    assert row["cache_usage"] is None
    # Only the interval's two observations, both between 0.1 and 0.2.
    assert row["time_to_first_token_s"]["p50"] == pytest.approx(0.15)
    assert row["time_per_output_token_s"] == {"p50": None, "p95": None}
    assert summarize(before, after, "other") == []


def test_parse_keeps_only_gales_samples_without_prefix_or_total() -> None:
    samples = parse_samples(EXPOSITION)
    assert [(s.name, s.labels["status"], s.value) for s in samples] == [
        ("gale_requests", "200", 7.0),
        ("gale_requests", "401", 1.0),
    ]


def node_and_dashboard(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/prometheus/sd":
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return httpx.Response(200, json=[{"labels": {}, "targets": ["10.0.0.5:9999"]}])
    if request.url.host == "10.0.0.5" and request.url.path == "/metrics":
        assert "authorization" not in request.headers  # the token goes to the dashboard only
        return httpx.Response(200, text=EXPOSITION)
    return httpx.Response(404)


def test_reader_finds_targets_through_the_dashboard() -> None:
    config = ClusterConfig("http://head:8265", token=TOKEN, token_source="test")
    transport = httpx.MockTransport(node_and_dashboard)
    with MetricsReader(config, urls=[], transport=transport) as reader:
        assert reader.endpoints() == ["http://10.0.0.5:9999/metrics"]
        assert len(reader.samples()) == 2


def test_reader_uses_the_configured_urls_and_fails_when_none_answers() -> None:
    urls = metrics_urls_from_env({"GALE_METRICS_URL": " http://a:1/metrics, http://b:2/m "})
    assert urls == ["http://a:1/metrics", "http://b:2/m"]
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    reader = MetricsReader(ClusterConfig(), urls=urls, transport=transport)
    with reader, pytest.raises(ClusterError) as failed:
        reader.samples()
    assert "GALE_METRICS_URL" in (failed.value.hint or "")
