"""What the app records per request, through the in-memory recorder, on the real engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from serving.api import ServingState, build_api
from serving.engines.base import Engine
from serving.keys import KeyRecord
from serving.metrics import NO_KEY, MemoryMetrics

pytestmark = [pytest.mark.model, pytest.mark.anyio]

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
async def measured(
    engine: Engine, state: ServingState
) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryMetrics]]:
    """A client on an app recording into a fresh MemoryMetrics."""
    metrics = MemoryMetrics()
    transport = httpx.ASGITransport(app=build_api(engine, state, metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as http:
        yield http, metrics


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_counts_per_key_and_status(
    measured: tuple[httpx.AsyncClient, MemoryMetrics], keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    http, metrics = measured
    (main, main_record), (second, second_record) = keys["main"], keys["second"]
    usage: dict[str, list[int]] = {main_record.id: [0, 0], second_record.id: [0, 0]}
    body: dict[str, Any] = {"messages": HELLO, "max_tokens": 4}
    for key, record, times in ((main, main_record, 3), (second, second_record, 2)):
        for _ in range(times):
            response = await http.post("/v1/chat/completions", json=body, headers=bearer(key))
            assert response.status_code == 200, response.text
            usage[record.id][0] += response.json()["usage"]["prompt_tokens"]
            usage[record.id][1] += response.json()["usage"]["completion_tokens"]
    refused = await http.post("/v1/chat/completions", json=body, headers=bearer("gale-nope"))
    assert refused.status_code == 401
    bad = await http.post("/v1/chat/completions", json={"messages": []}, headers=bearer(second))
    assert bad.status_code == 400

    assert dict(metrics.requests) == {
        ("demo", main_record.id, 200): 3,
        ("demo", second_record.id, 200): 2,
        ("demo", second_record.id, 400): 1,
        ("demo", NO_KEY, 401): 1,
    }
    assert {
        key: [metrics.prompt_tokens["demo", key], metrics.completion_tokens["demo", key]]
        for key in usage
    } == usage
    assert sum(metrics.prompt_tokens.values()) == sum(p for p, _ in usage.values())
    assert metrics.running["demo"] == 0
    # Only streams have a first token apart from the whole answer.
    assert metrics.first_tokens == []


async def test_stream_records_first_token_and_per_token_times(
    measured: tuple[httpx.AsyncClient, MemoryMetrics], keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    http, metrics = measured
    key, record = keys["main"]
    body = {
        "messages": HELLO,
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=bearer(key)) as r:
        assert r.status_code == 200
        data = [json.loads(line[6:]) async for line in r.aiter_lines() if line[6:7] == "{"]
    assert metrics.running["demo"] == 0
    assert dict(metrics.requests) == {("demo", record.id, 200): 1}
    usage = data[-1]["usage"]
    assert metrics.prompt_tokens["demo", record.id] == usage["prompt_tokens"]
    assert metrics.completion_tokens["demo", record.id] == usage["completion_tokens"]
    assert [(d, k) for d, k, _ in metrics.first_tokens] == [("demo", record.id)]
    assert all(0 < seconds < 120 for _, _, seconds in metrics.first_tokens)
    assert [(d, k) for d, k, _ in metrics.per_token] == [("demo", record.id)]
