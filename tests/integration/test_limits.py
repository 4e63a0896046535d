"""Per-key limits and usage on a real local head: the session deployment at 2 replicas.

Rate limits here count over 6-second windows (`key_limit_window`), so a window
passes in seconds; a key's allowance per window is its per-minute limit / 10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devstack import eventually
from gale_cli.cluster import ServeClient
from serving.keys import KeyRecord, generate_key
from serving.serve_config import model_status, to_serve_application
from tests.conftest import Deployed, gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]
WINDOW_S = 6
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = [{"role": "user", "content": "Say hello."}]
# Ray exports metrics every few seconds: usage reaches the endpoint within this.
EXPORT_TIMEOUT_S = 60


def running_pids(client: ServeClient, name: str) -> set[int]:
    app = client.get_application(name) or {}
    return {r["pid"] for r in model_status(app).get("replicas", []) if r.get("state") == "RUNNING"}


class Limited:
    """The session deployment at 2 replicas with short rate-limit windows, and its keys."""

    def __init__(self, deployed: Deployed) -> None:
        self.deployed = deployed
        self.spec = deployed.spec.model_copy(
            update={"min_replicas": 2, "max_replicas": 2, "key_limit_window": WINDOW_S}
        )
        self.keys: dict[str, tuple[str, KeyRecord]] = {}

    def add(self, label: str, **limits: int) -> tuple[str, KeyRecord]:
        """A new key with these limits, applied to the deployment (in place)."""
        key, record = generate_key(label)
        self.keys[label] = (key, record.model_copy(update=limits))
        self.apply()
        return self.keys[label]

    def apply(self) -> None:
        records = [self.deployed.record, *(r for _, r in self.keys.values())]
        self.deployed.client.apply_application(to_serve_application(self.spec, records))

    def post(self, key: str, **extra: Any) -> httpx.Response:
        return httpx.post(
            f"{self.deployed.base_url}/chat/completions",
            json={"messages": HELLO, "max_tokens": 2, **extra},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )

    def opened(self, key: str) -> None:
        """Wait until the replicas accept a newly added key (they get it within seconds).

        Asked with GET /v1/models, which no limit counts, several times in a row so that
        both replicas have most likely answered.
        """

        def accepted() -> bool:
            url = f"{self.deployed.base_url}/models"
            auth = {"Authorization": f"Bearer {key}"}
            return all(httpx.get(url, headers=auth, timeout=30).is_success for _ in range(4))

        eventually(accepted, 15, "the new key accepted")


@pytest.fixture(scope="module")
def limited(bundled_model: Deployed) -> Iterator[Limited]:
    setup = Limited(bundled_model)
    setup.apply()
    client, name = bundled_model.client, bundled_model.name
    eventually(lambda: len(running_pids(client, name)) == 2, 300, "2 replicas", interval=0.5)
    try:
        yield setup
    finally:
        bundled_model.apply([bundled_model.record])
        eventually(lambda: len(running_pids(client, name)) == 1, 300, "back to 1", interval=0.5)


def window_start() -> None:
    """Sleep until just after a rate-limit window begins, so a short burst stays in one."""
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)


def test_a_limited_key_gets_exactly_its_requests_then_429s(limited: Limited) -> None:
    key, _ = limited.add("three-per-window", rpm=30)  # 3 per 6 s window
    free_key, _ = limited.add("free")
    limited.opened(free_key)
    for _attempt in range(3):  # a burst that straddles a window is tried again
        window_start()
        began = time.time() // WINDOW_S
        answers = [limited.post(key) for _ in range(6)]
        if time.time() // WINDOW_S == began:
            break
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 429, 429, 429]
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "3"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[-1]
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_S
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # The other key of the same deployment is unaffected, and its answers carry no limits.
    free = [limited.post(free_key) for _ in range(4)]
    assert [f.status_code for f in free] == [200] * 4
    assert "x-ratelimit-limit-requests" not in free[0].headers
    # Streamed answers carry the headers too.
    window_start()
    streamed = limited.post(key, stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-ratelimit-limit-requests"] == "3"


def test_raising_a_limit_applies_within_seconds_without_a_restart(limited: Limited) -> None:
    key, record = limited.add("raised", rpm=10)  # 1 per window
    limited.opened(key)
    pids = running_pids(limited.deployed.client, limited.deployed.name)
    done = gale("keys", "update", limited.deployed.name, record.id, "--rpm", "600", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rpm"] == 600
    raised_at = time.monotonic()

    def burst_passes() -> bool:  # 5 in one window: more than the old limit's 1
        return all(limited.post(key).status_code == 200 for _ in range(5))

    eventually(burst_passes, 5, "the raised limit applied")
    assert time.monotonic() - raised_at < 5 + 5  # the wait above, plus one burst
    assert running_pids(limited.deployed.client, limited.deployed.name) == pids
    limited.keys["raised"] = (key, record.model_copy(update={"rpm": 600}))


def test_a_token_budget_is_refused_once_used_across_replicas(limited: Limited) -> None:
    created = gale("keys", "create", limited.deployed.name, "--token-budget", "150", "--json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    key, key_id = made["key"], made["id"]
    assert made["token_budget"] == 150
    # The CLI wrote the key into the live config; keep it when this module re-applies.
    app = limited.deployed.client.get_application(limited.deployed.name) or {}
    rows = app["deployed_app_config"]["deployments"][0]["user_config"]["api_keys"]
    limited.keys["budget"] = (
        key,
        KeyRecord.model_validate(next(r for r in rows if r["id"] == key_id)),
    )
    limited.opened(key)
    used = []
    status = 200
    while status == 200:
        answer = limited.post(key)
        status = answer.status_code
        if status == 200:
            usage = answer.json()["usage"]
            used.append(usage["prompt_tokens"] + usage["completion_tokens"])
        assert len(used) < 20
    assert status == 429 and answer.json()["error"]["type"] == "insufficient_quota"
    # Within the stated overshoot: requests admitted before every replica's count met
    # the budget (at most a sync interval's worth; here, sequential requests).
    assert 150 <= sum(used) < 150 + 3 * max(used)
    time.sleep(1)  # several syncs: every replica knows the budget is spent
    assert {limited.post(key).status_code for _ in range(6)} == {429}

    def listed() -> dict[str, Any] | None:
        result = gale("keys", "list", limited.deployed.name, "--json")
        row = next(r for r in json.loads(result.stdout) if r["id"] == key_id)
        usage = row["usage"]
        done = usage and usage["prompt_tokens"] + usage["completion_tokens"] == sum(used)
        return row if done else None

    row = eventually(listed, EXPORT_TIMEOUT_S, "the key's usage in gale keys list", interval=1)
    assert row["usage"]["requests"] == len(used)
    assert row["limits"]["token_budget"] == 150


def test_the_openai_sdk_retries_after_retry_after(limited: Limited) -> None:
    key, _ = limited.add("sdk", rpm=10)  # 1 per 6 s window
    limited.opened(key)
    strict = openai.OpenAI(base_url=limited.deployed.base_url, api_key=key, max_retries=0)
    patient = openai.OpenAI(base_url=limited.deployed.base_url, api_key=key, max_retries=3)
    ask: dict[str, Any] = {"model": limited.deployed.name, "messages": HELLO, "max_tokens": 2}
    window_start()
    strict.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as refused:
        strict.chat.completions.create(**ask)
    assert refused.value.response.headers["retry-after"]
    answer = patient.chat.completions.create(**ask)  # waits out the window, then succeeds
    assert answer.choices[0].message.content is not None


def test_gale_usage_counts_two_keys_exactly(limited: Limited) -> None:
    (first, one), (second, two) = limited.add("usage-1"), limited.add("usage-2")
    limited.opened(first)
    limited.opened(second)
    # The keys' requests so far were the checks above, which were refused or unauthorized;
    # only answered requests count. Count from here.
    expected: Counter[tuple[str, str]] = Counter()
    baseline = usage_rows()
    for key, record, times in ((first, one, 3), (second, two, 2)):
        for _ in range(times):
            answer = limited.post(key)
            assert answer.status_code == 200
            expected[record.id, "requests"] += 1
            expected[record.id, "prompt_tokens"] += answer.json()["usage"]["prompt_tokens"]
            expected[record.id, "completion_tokens"] += answer.json()["usage"]["completion_tokens"]

    def counted() -> dict[str, Any] | None:
        rows = usage_rows()
        got = Counter(
            {
                (k, field): rows[k][field] - baseline.get(k, {}).get(field, 0)
                for k in (one.id, two.id)
                if k in rows
                for field in ("requests", "prompt_tokens", "completion_tokens")
            }
        )
        return rows if got == expected else None

    rows = eventually(counted, EXPORT_TIMEOUT_S, "gale usage's counts", interval=1)
    assert rows[one.id]["name"] == "usage-1"
    result = gale("usage", limited.deployed.name, "--json", "--since", "1h")
    deployment = json.loads(result.stdout)[0]
    cpu = next(h for h in deployment["hardware"] if h["id"] == "cpu")
    assert cpu["replica_hours"] > 0
    assert cpu["cost"] == pytest.approx(cpu["replica_hours"] * 0.096, abs=1e-3)
    by_day = json.loads(gale("usage", limited.deployed.name, "--json", "--by", "day").stdout)
    assert sum(d["requests"] for d in by_day[0]["days"]) == by_day[0]["requests"]
    described = json.loads(gale("describe", limited.deployed.name, "--json").stdout)
    assert described["usage"]["requests"] >= 5
    assert described["spec"]["key_limit_window"] == WINDOW_S


def usage_rows() -> dict[str, dict[str, Any]]:
    result = gale("usage", "smol", "--json", "--since", "24h")
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in json.loads(result.stdout)[0]["keys"]}


def test_the_rate_limits_example_waits_out_its_limit(limited: Limited) -> None:
    key, _ = limited.add("example", rpm=20)  # 2 per 6 s window: 3 requests need a retry
    limited.opened(key)
    window_start()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "rate_limits.py"), "3"],
        env={**os.environ, "GALE_ENDPOINT": limited.deployed.base_url, "GALE_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(": ok, " in line for line in lines)
    # Each answer carried the key's headers (which window an answer falls in depends on
    # how long the script took to start, so the counts themselves are not compared).
    left = [int(line.split("requests left ")[1].split(",")[0]) for line in lines]
    assert all(0 <= n <= 2 for n in left), lines  # never above the limit of 2
    assert key not in done.stdout + done.stderr
