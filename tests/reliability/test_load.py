"""Load: many concurrent streaming clients against one deployment with a bounded queue.

64 clients (short form: for 15 s, full form: 60 s) stream chat completions from the
session's bundled model (batch size 8: 16 in flight per replica, 32 queued, the rest
refused). Every answer must be a complete stream or a deliberate 503/429 carrying
Retry-After (clients honour it); the replica's memory must stay steady; the
deployment must answer normally afterwards.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from bench.load import Target, closed_loop, endpoint_sender, http_client
from serving.serve_config import model_status
from tests.conftest import Deployed
from tests.reliability.conftest import scaled

pytestmark = [pytest.mark.cluster, pytest.mark.model]
CLIENTS = 64


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def test_streaming_clients_get_answers_or_deliberate_refusals(bundled_model: Deployed) -> None:
    app = bundled_model.client.get_application(bundled_model.name) or {}
    replicas = [r for r in model_status(app).get("replicas", []) if r["state"] == "RUNNING"]
    assert len(replicas) == 1
    pid = replicas[0]["pid"]
    duration = scaled(15, 60)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            value = rss_bytes(pid)
            if value is not None:
                samples.append(value)

    sampler = threading.Thread(target=sample, daemon=True)
    target = Target(bundled_model.base_url, bundled_model.key, bundled_model.name)

    async def load() -> list:
        async with http_client(CLIENTS) as http:
            send = endpoint_sender(http, target, max_tokens=8, stream=True)
            run = await closed_loop(send, CLIENTS, duration=duration)
        return run.results

    sampler.start()
    try:
        results = asyncio.run(load())
    finally:
        done.set()
        sampler.join(timeout=5)

    refused = [r for r in results if not r.ok]
    succeeded = [r for r in results if r.ok]
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print(f"\n{len(results)} requests in {duration:g}s from {CLIENTS} clients: {statuses}")
    assert succeeded, "no request succeeded"
    assert all(r.tokens >= 1 for r in succeeded)
    for r in refused:
        assert r.status in (503, 429), (r.status, r.error)
        assert r.retry_after is not None, (r.status, r.error)
    # Memory steady: the last third of the run holds no more than the first third, plus slack.
    assert len(samples) >= 6, samples
    third = len(samples) // 3
    early, late = max(samples[:third]), max(samples[-third:])
    print(f"replica RSS: early max {early / 2**20:.0f} MiB, late max {late / 2**20:.0f} MiB")
    assert late <= early * 1.15 + 64 * 2**20, (early, late)
    # Still serving, same process.
    with httpx.Client(timeout=60, trust_env=False) as http:
        ok = http.post(
            bundled_model.base_url + "/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {bundled_model.key}"},
        )
    assert ok.status_code == 200, ok.text
    assert rss_bytes(pid) is not None
