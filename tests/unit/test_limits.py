"""Per-key limits as pure logic: the rules, the ledger, and a replica's admission through ASGI."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from serving import limits as rules
from serving.admission import Limiter, LimitRequests, LocalLedger
from serving.keys import KeyRecord, generate_key
from serving.ledger import KeyReport, Ledger, Report
from serving.limits import KeyView, Limits
from serving.replica_state import ServingState

NO_DEFAULTS = SimpleNamespace(
    key_rpm=None, key_tpm=None, key_concurrency=None, key_token_budget=None, key_limit_window=60
)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = 1_000_020.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("remaining", "replicas", "size"),
    [(0, 1, 0), (-3, 2, 0), (1, 1, 1), (5, 1, 1), (9, 2, 1), (13, 1, 4), (101, 2, 13), (100, 4, 7)],
)
def test_lease_size(remaining: int, replicas: int, size: int) -> None:
    assert rules.lease_size(remaining, replicas) == size


def test_a_ledger_never_grants_more_than_the_allowance() -> None:
    ledger = Ledger(Clock())
    grants = [ledger.acquire("k", 60, 7, 100, f"r{i % 3}") for i in range(200)]
    assert sum(grants) == 100
    assert grants[-1] == 0
    assert ledger.acquire("k", 60, 8, 100, "r0") > 0  # a new window starts afresh


@pytest.mark.parametrize(
    ("batch", "running", "key", "share"),
    [
        (8, {"a": 8}, "a", None),  # one key alone is never limited
        (8, {"a": 3, "b": 1}, "a", None),  # not saturated
        (8, {"a": 7, "b": 1}, "a", 4),
        (8, {"a": 8}, "c", 4),  # the asking key counts as active
        (8, {"a": 8, "b": 0, "c": 1}, "c", 4),  # b holds nothing: not active
        (2, {"a": 1, "b": 1, "c": 1}, "c", 1),
    ],
)
def test_fair_share(batch: int, running: dict[str, int], key: str, share: int | None) -> None:
    assert rules.fair_share(batch, running, key) == share


def test_check_in_order_budget_concurrency_tokens_share() -> None:
    limits = Limits(tpm=600, concurrency=2, token_budget=1000, window_s=6)
    assert limits.per_window(600) == 60
    view = KeyView(used_tokens=990, unsynced_tokens=10)
    refusal = rules.check(limits, view, 0.0)
    assert refusal is not None and refusal.type == "insufficient_quota"
    assert refusal.retry_after is None
    refusal = rules.check(limits, KeyView(running=1, others_running=1), 0.0)
    assert refusal is not None and refusal.retry_after == rules.BUSY_RETRY_S
    refusal = rules.check(limits, KeyView(window_tokens=59, unsynced_tokens=1), 4.5)
    assert refusal is not None and refusal.code == "rate_limit_exceeded"
    assert refusal.retry_after == pytest.approx(1.5)
    assert rules.check(limits, KeyView(window_tokens=59), 0.0) is None
    assert rules.check(Limits(), KeyView(running=2), 0.0, share=2) is not None
    assert rules.check(Limits(), KeyView(running=1), 0.0, share=2) is None


def test_headers_and_durations() -> None:
    limits = Limits(rpm=60, tpm=1200, window_s=60)
    view = KeyView(window_requests=10, unsynced_requests=2, window_tokens=100)
    found = rules.headers(limits, view, 30.25)
    assert found == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "48",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1200",
        "x-ratelimit-remaining-tokens": "1100",
        "x-ratelimit-reset-tokens": "30s",
    }
    assert rules.headers(Limits(concurrency=3), view, 0.0) == {}
    assert [rules.duration_text(s) for s in (0.25, 1, 59.5, 60, 61)] == [
        "250ms",
        "1s",
        "1m0s",
        "1m0s",
        "1m1s",
    ]


def test_a_keys_own_limits_override_the_deployments() -> None:
    _, record = generate_key("k")
    record = record.model_copy(update={"rpm": 5})
    defaults = SimpleNamespace(**{**vars(NO_DEFAULTS), "key_rpm": 50, "key_tpm": 900})
    assert rules.limits_of(record, defaults) == Limits(rpm=5, tpm=900)


def test_the_ledger_shares_counts_between_replicas_and_keeps_usage_by_hour() -> None:
    clock = Clock(7200.0)
    ledger = Ledger(clock)
    ledger.sync(Report("r1", "cpu", 2.0, 60, {"k": KeyReport(3, 3, 10, 20, running=2)}))
    snapshot = ledger.sync(Report("r2", "cpu", 1.5, 60, {}, watched=("k",)))
    counts = snapshot.keys["k"]
    assert (counts.requests, counts.tokens, counts.used, counts.others_running) == (3, 30, 30, 2)
    clock.now += 3600
    ledger.sync(Report("r1", "cpu", 1.0, 60, {"k": KeyReport(1, 1, 5, 5)}))
    assert {h: (u.requests, u.prompt, u.completion) for (_, h), u in ledger.usage.items()} == {
        2: (3, 10, 20),
        3: (1, 5, 5),
    }
    assert ledger.replica_seconds == {("cpu", 2): 3.5, ("cpu", 3): 1.0}
    # A replica not heard from for a while no longer counts as running anything.
    clock.now += 60
    assert ledger.sync(Report("r2", "cpu", 1, 60, {}, watched=("k",))).keys["k"].others_running == 0


# The middleware, around a trivial app that answers with some usage.


def limited_app(
    limiter: Limiter, release: asyncio.Event | None = None, tokens: int = 10
) -> httpx.AsyncClient:
    """An ASGI app whose POST answers after `release` (if given) and charges `tokens`."""

    async def answer(request: Request) -> Any:
        if release is not None:
            await release.wait()
        key = request.headers["authorization"].split()[1]
        record = next(k for k in limiter.state.keys if k.prefix == key[: len(k.prefix)])
        if request.method == "POST":
            limiter.tokens(record.id, tokens // 2, tokens - tokens // 2)
        if request.query_params.get("stream"):
            return StreamingResponse(iter([b"data: 1\n\n"]), media_type="text/event-stream")
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST", "GET"])])
    wrapped = LimitRequests(app, limiter)
    return httpx.AsyncClient(transport=httpx.ASGITransport(wrapped), base_url="http://test")


def make_limiter(
    records: list[KeyRecord], clock: Clock, ledger: Ledger, replica: str = "r1", **defaults: Any
) -> Limiter:
    state = ServingState(
        {
            "api_keys": [r.model_dump() for r in records],
            "parameters": {"batch_size": 8},
            **defaults,
        }
    )
    return Limiter(state, LocalLedger(ledger), replica, "cpu", clock=clock)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.anyio
async def test_two_replicas_give_a_key_exactly_its_requests_then_429s() -> None:
    clock, ledger = Clock(6000.0), Ledger()
    ledger.clock = clock
    limited_key, limited = generate_key("limited")
    free_key, free = generate_key("free")
    limited = limited.model_copy(update={"rpm": 7})
    replicas = [make_limiter([limited, free], clock, ledger, f"r{i}") for i in (1, 2)]
    clients = [limited_app(r) for r in replicas]
    statuses = []
    for i in range(12):
        response = await clients[i % 2].post("/v1/chat/completions", headers=auth(limited_key))
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit-requests"] == "7"
        if response.status_code == 429:
            error = response.json()["error"]
            assert error["type"] == error["code"] == "rate_limit_exceeded"
            assert response.headers["retry-after"] == "60"
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert statuses == [200] * 7 + [429] * 5
    for client in clients:  # the other key is unaffected, and its answers carry no headers
        response = await client.post("/v1/chat/completions", headers=auth(free_key))
        assert response.status_code == 200 and "x-ratelimit-limit-requests" not in response.headers
    clock.now += 60  # the next window
    assert (await clients[0].post("/v1/chat/completions", headers=auth(limited_key))).is_success


@pytest.mark.anyio
async def test_generous_limits_need_no_round_trip_per_request() -> None:
    clock, ledger = Clock(), Ledger()
    key, record = generate_key("k")
    limiter = make_limiter([record.model_copy(update={"rpm": 10_000})], clock, ledger)
    asked = 0
    acquire = ledger.acquire

    def counting(*args: Any) -> int:
        nonlocal asked
        asked += 1
        return acquire(*args)

    ledger.acquire = counting  # type: ignore[method-assign]
    async with limited_app(limiter) as client:
        for _ in range(50):
            assert (await client.post("/v1/chat/completions", headers=auth(key))).is_success
    assert asked == 1


@pytest.mark.anyio
async def test_a_token_budget_is_refused_across_replicas_once_synced() -> None:
    clock, ledger = Clock(), Ledger()
    ledger.clock = clock
    key, record = generate_key("k")
    record = record.model_copy(update={"token_budget": 25})
    one, two = (make_limiter([record], clock, ledger, f"r{i}") for i in (1, 2))
    async with limited_app(one) as first, limited_app(two) as second:
        for _ in range(3):
            assert (await first.post("/v1/chat/completions", headers=auth(key))).is_success
        refused = await first.post("/v1/chat/completions", headers=auth(key))
        assert refused.status_code == 429 and "retry-after" not in refused.headers
        assert refused.json()["error"]["type"] == "insufficient_quota"
        # The other replica learns of the use at its next sync.
        await one.sync()
        await two.sync()
        assert (await second.post("/v1/chat/completions", headers=auth(key))).status_code == 429
    assert ledger.used[record.id] == 30  # overshoot: the one request admitted under the budget


@pytest.mark.anyio
async def test_concurrency_and_streams_carry_headers() -> None:
    clock, ledger = Clock(), Ledger()
    key, record = generate_key("k")
    record = record.model_copy(update={"concurrency": 1, "tpm": 600})
    limiter = make_limiter([record], clock, ledger, key_limit_window=6)
    release = asyncio.Event()
    async with limited_app(limiter, release) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions?stream=1", headers=auth(key)))
        await asyncio.sleep(0.05)
        busy = await client.post("/v1/chat/completions", headers=auth(key))
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        release.set()
        streamed = await first
        assert streamed.status_code == 200
        assert streamed.headers["x-ratelimit-limit-tokens"] == "60"
        after = await client.post("/v1/chat/completions", headers=auth(key))
        assert after.headers["x-ratelimit-remaining-tokens"] == "40"
    assert limiter.running[record.id] == 0


@pytest.mark.anyio
async def test_raising_a_limit_applies_at_once() -> None:
    clock, ledger = Clock(), Ledger()
    key, record = generate_key("k")
    limiter = make_limiter([record.model_copy(update={"rpm": 1})], clock, ledger)
    async with limited_app(limiter) as client:
        assert (await client.post("/v1/chat/completions", headers=auth(key))).is_success
        assert (await client.post("/v1/chat/completions", headers=auth(key))).status_code == 429
        limiter.state.update(
            {
                "api_keys": [record.model_copy(update={"rpm": 3}).model_dump()],
                "parameters": {"batch_size": 8},
            }
        )
        assert (await client.post("/v1/chat/completions", headers=auth(key))).is_success


@pytest.mark.anyio
async def test_usage_counts_every_key_through_the_ledger() -> None:
    clock, ledger = Clock(3600.0 * 5), Ledger()
    ledger.clock = clock
    key, record = generate_key("k")
    limiter = make_limiter([record], clock, ledger)
    async with limited_app(limiter, tokens=7) as client:
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", headers=auth(key))).is_success
        assert (await client.get("/v1/chat/completions", headers=auth(key))).is_success
    clock.now += 2
    await limiter.sync()
    usage = ledger.usage[record.id, 5]
    assert (usage.requests, usage.prompt + usage.completion) == (3, 21)
    assert ledger.replica_seconds["cpu", 5] == pytest.approx(2.0)


@pytest.mark.anyio
async def test_a_key_over_its_fair_share_waits_while_another_is_served() -> None:
    clock, ledger = Clock(), Ledger()
    (hog_key, hog), (polite_key, polite) = generate_key("hog"), generate_key("polite")
    limiter = make_limiter([hog, polite], clock, ledger)
    limiter.state.parameters = limiter.state.parameters.model_copy(update={"batch_size": 4})
    release = asyncio.Event()
    async with limited_app(limiter, release) as client:
        held = [
            asyncio.create_task(client.post("/v1/chat/completions", headers=auth(hog_key)))
            for _ in range(4)
        ]
        await asyncio.sleep(0.05)  # the hog alone holds a full batch: no one else to share with
        assert limiter.running[hog.id] == 4
        served = asyncio.create_task(client.post("/v1/chat/completions", headers=auth(polite_key)))
        await asyncio.sleep(0.05)
        over = await client.post("/v1/chat/completions", headers=auth(hog_key))
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        assert "fair share of 2" in over.json()["error"]["message"]
        release.set()
        assert (await served).is_success
        assert all(r.is_success for r in await asyncio.gather(*held))
