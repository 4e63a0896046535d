"""Replica metrics on a real local head: Ray exports gale's counts per key in Prometheus text."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import eventually
from gale_cli.metrics_reader import MetricsReader, Sample
from serving import metrics
from serving.keys import generate_key
from tests.conftest import Deployed, gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]
HELLO = [{"role": "user", "content": "Say hello."}]
# Ray reports its metrics every few seconds: counts reach the endpoint within this.
EXPORT_TIMEOUT_S = 60


def totals(samples: list[Sample], name: str, deployment: str) -> Counter[tuple[str, str]]:
    """The sum of `name` by (key id, status), over every replica and node."""
    found: Counter[tuple[str, str]] = Counter()
    for sample in samples:
        if sample.name == name and sample.labels.get(metrics.DEPLOYMENT) == deployment:
            labels = sample.labels
            found[labels[metrics.KEY], labels.get(metrics.STATUS, "")] += sample.value
    return found


def test_requests_and_tokens_are_counted_per_key(bundled_model: Deployed) -> None:
    (first_key, first), (second_key, second) = generate_key("m1"), generate_key("m2")
    url, name = bundled_model.base_url, bundled_model.name
    ok: Counter[str] = Counter()
    tokens: Counter[tuple[str, str]] = Counter()

    def call(key: str, key_id: str, stream: bool = False) -> int:
        body = {"messages": HELLO, "max_tokens": 4}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        response = httpx.post(
            f"{url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        if response.status_code == 200:
            ok[key_id] += 1
            usage = (
                [line for line in response.text.splitlines() if '"usage"' in line][-1]
                if stream
                else None
            )
            data = httpx.Response(200, content=usage[6:]).json() if usage else response.json()
            tokens[key_id, "prompt"] += data["usage"]["prompt_tokens"]
            tokens[key_id, "completion"] += data["usage"]["completion_tokens"]
        return response.status_code

    bundled_model.apply([bundled_model.record, first, second])
    try:
        # Until the replica has the new keys they are refused (and counted as no key).
        eventually(lambda: call(first_key, first.id) == 200, 10, "the new keys opening it")
        eventually(lambda: call(second_key, second.id) == 200, 10, "the second key")
        for _ in range(3):
            call(first_key, first.id)
        call(second_key, second.id)
        call(second_key, second.id, stream=True)
        assert call("gale-not-a-key", "none") == 401

        with MetricsReader(bundled_model.client.config) as reader:

            def exported() -> list[Sample] | None:
                samples = reader.samples()
                counts = totals(samples, metrics.REQUESTS, name)
                done = counts[first.id, "200"] >= ok[first.id]
                return samples if done and counts[second.id, "200"] >= ok[second.id] else None

            samples = eventually(exported, EXPORT_TIMEOUT_S, "the counts exported", 1.0)
            texts = reader.texts()
    finally:
        bundled_model.apply([bundled_model.record])

    requests = totals(samples, metrics.REQUESTS, name)
    assert requests[first.id, "200"] == ok[first.id] >= 4
    assert requests[second.id, "200"] == ok[second.id] >= 3
    assert requests[metrics.NO_KEY, "401"] >= 1
    for kind, metric in (
        ("prompt", metrics.PROMPT_TOKENS),
        ("completion", metrics.COMPLETION_TOKENS),
    ):
        counted = totals(samples, metric, name)
        assert counted[first.id, ""] == tokens[first.id, kind] > 0
        assert counted[second.id, ""] == tokens[second.id, kind] > 0
    first_tokens = totals(samples, metrics.TIME_TO_FIRST_TOKEN + "_count", name)
    assert first_tokens[second.id, ""] == 1
    assert first_tokens[first.id, ""] == 0
    durations = totals(samples, metrics.REQUEST_DURATION + "_count", name)
    assert durations[first.id, ""] == ok[first.id]
    # Ray's export is Prometheus text that prometheus_client's own parser reads.
    families = [f for text in texts for f in text_string_to_metric_families(text)]
    names = {f.name for f in families}
    assert {"ray_gale_requests", "ray_gale_prompt_tokens"} <= names, sorted(names)
    assert first_key not in "".join(texts) and second_key not in "".join(texts)


def test_gale_top_json_reports_the_deployment(bundled_model: Deployed) -> None:
    headers = {"Authorization": f"Bearer {bundled_model.key}"}
    body = {"messages": HELLO, "max_tokens": 8, "stream": True}
    with httpx.Client(timeout=60) as http:
        for _ in range(2):
            http.post(f"{bundled_model.base_url}/chat/completions", json=body, headers=headers)
    with MetricsReader(bundled_model.client.config) as reader:
        count = metrics.TIME_TO_FIRST_TOKEN + "_count"
        eventually(
            lambda: sum(totals(reader.samples(), count, bundled_model.name).values()) >= 2,
            EXPORT_TIMEOUT_S,
            "the streams' first tokens exported",
            1.0,
        )
    result = gale("top", bundled_model.name, "--json", "--interval", "1")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["name"] == bundled_model.name
    assert row["status"] == "RUNNING"
    assert row["replicas"]["running"] == row["replicas"]["target"] >= 1
    assert row["replicas"]["min"] <= row["replicas"]["running"] <= row["replicas"]["max"]
    # No request in the interval: latency from every request since the replica started.
    assert 0 < row["time_to_first_token_s"]["p50"] <= row["time_to_first_token_s"]["p95"]
    assert row["errors_per_s"] == 0
    assert bundled_model.key not in result.stdout + result.stderr


def test_gale_top_names_a_missing_deployment(bundled_model: Deployed) -> None:
    result = gale("top", "no-such-model", "--json", "--interval", "0.2")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr


def test_engine_activity_gauges_are_exported_and_shown_by_top(bundled_model: Deployed) -> None:
    name = bundled_model.name
    with MetricsReader(bundled_model.client.config) as reader:

        def exported() -> list[Sample] | None:
            samples = [s for s in reader.samples() if s.labels.get(metrics.DEPLOYMENT) == name]
            found = {s.name for s in samples}
            return samples if {metrics.QUEUED, metrics.OCCUPANCY} <= found else None

        samples = eventually(exported, EXPORT_TIMEOUT_S, "the activity gauges exported", 1.0)
        texts = reader.texts()
    families = {f.name for text in texts for f in text_string_to_metric_families(text)}
    assert {"ray_gale_requests_queued", "ray_gale_batch_occupancy"} <= families
    for sample in samples:
        if sample.name == metrics.OCCUPANCY:
            assert 0 <= sample.value <= 1
        if sample.name == metrics.QUEUED:
            assert sample.value >= 0
    # The transformers engine reports no KV-cache figure (vLLM does).
    assert metrics.CACHE_USAGE not in {s.name for s in samples}

    result = gale("top", name, "--json", "--interval", "0.5")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["requests_queued"] >= 0
    assert row["batch_occupancy"] is not None and 0 <= row["batch_occupancy"] <= 1
    assert row["cache_usage"] is None
