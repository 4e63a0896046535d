"""What per-key limits cost a request: latency p50 at concurrency 8 with limits on vs off.

"On" gives every key generous limits of every kind (none ever triggers), so each
request takes the whole admission path and its counts go to the ledger; "off" sets
none. Rounds alternate off and on on the same deployment, so drift in the
machine's load falls on both; short answers keep the difference visible.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import httpx

from bench.live import update_live
from bench.load import Run, Target, closed_loop, endpoint_sender, http_client, percentile
from devstack import eventually
from gale_cli.cluster import ServeClient

CONCURRENCY = 8
# Tokens per answer: a short answer keeps the limits' share of a request measurable.
MAX_TOKENS = 4
GENEROUS = {
    "key_rpm": 10_000_000,
    "key_tpm": 1_000_000_000,
    "key_concurrency": 10_000,
    "key_token_budget": 10**15,
}
OFF = dict.fromkeys(GENEROUS)
TARGET_ADDED_MS = 5.0


def limits_overhead(
    client: ServeClient, target: Target, *, rounds: int = 3, per_worker: int = 8
) -> dict[str, Any]:
    """Median over rounds of each mode's p50 latency (ms), and what the limits add."""
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for _ in range(rounds):
            for mode, values in (("off", OFF), ("on", GENEROUS)):
                update_live(client, target.model, **values)
                _applied(target, limited=mode == "on")
                run = asyncio.run(_loop(target, per_worker))
                if len(run.ok) != len(run.results):
                    raise RuntimeError(f"limits {mode}: {run.summary()['statuses']}")
                p50 = percentile([(r.end - r.start) * 1000 for r in run.ok], 50)
                assert p50 is not None
                p50s[mode].append(p50)
    finally:
        update_live(client, target.model, **OFF)
    off, on = statistics.median(p50s["off"]), statistics.median(p50s["on"])
    return {
        "admission": admission_cost(),
        "concurrency": CONCURRENCY,
        "max_tokens": MAX_TOKENS,
        "requests_per_round": CONCURRENCY * per_worker,
        "p50_ms_off": round(off, 2),
        "p50_ms_on": round(on, 2),
        "added_ms": round(on - off, 2),
        "target_added_ms": TARGET_ADDED_MS,
        "rounds_p50_ms": {mode: [round(v, 2) for v in values] for mode, values in p50s.items()},
    }


async def _loop(target: Target, per_worker: int) -> Run:
    async with http_client(CONCURRENCY) as http:
        send = endpoint_sender(http, target, MAX_TOKENS, stream=False)
        await closed_loop(send, CONCURRENCY, per_worker=1)  # warm the connections
        return await closed_loop(send, CONCURRENCY, per_worker=per_worker)


def _applied(target: Target, *, limited: bool) -> None:
    """Wait until the replica answers with (or without) the rate-limit headers."""

    def seen() -> bool:
        response = httpx.get(
            f"{target.base_url}/models",
            headers={"Authorization": f"Bearer {target.key}"},
            timeout=30,
            trust_env=False,
        )
        return ("x-ratelimit-limit-requests" in response.headers) == limited

    eventually(seen, 30, f"limits {'on' if limited else 'off'} applied", interval=0.2)


def admission_cost(requests_per_worker: int = 250, rounds: int = 3) -> dict[str, Any]:
    """The limits' own cost, without a model or a network: p50 (µs) of a no-op route at
    concurrency 8 through the admission middleware, generous limits vs none.

    The replica's ledger is in-process here; in a cluster it is an actor, reached once per
    lease (rarely, with generous limits) and by the background sync, never per request.
    """
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            p50s[mode].append(asyncio.run(_admission_p50(mode == "on", requests_per_worker)))
    off, on = statistics.median(p50s["off"]), statistics.median(p50s["on"])
    return {
        "concurrency": CONCURRENCY,
        "p50_us_off": round(off, 1),
        "p50_us_on": round(on, 1),
        "added_us": round(on - off, 1),
    }


async def _admission_p50(limited: bool, per_worker: int) -> float:
    import time

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from serving.admission import Limiter, LimitRequests, LocalLedger
    from serving.keys import generate_key
    from serving.replica_state import ServingState

    key, record = generate_key("bench")
    config: dict[str, Any] = {"api_keys": [record.stored()], **(GENEROUS if limited else {})}
    limiter = Limiter(ServingState(config), LocalLedger(), "bench", "cpu")

    async def answer(request: Any) -> JSONResponse:
        limiter.tokens(record.id, 10, 4)
        return JSONResponse({"ok": True})

    app = LimitRequests(Starlette(routes=[Route("/v1/x", answer, methods=["POST"])]), limiter)
    transport = httpx.ASGITransport(app)
    headers = {"Authorization": f"Bearer {key}"}
    times: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

        async def worker() -> None:
            for _ in range(per_worker):
                started = time.perf_counter()
                response = await http.post("/v1/x", headers=headers)
                times.append((time.perf_counter() - started) * 1e6)
                assert response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    p50 = percentile(times, 50)
    assert p50 is not None
    return p50


def main() -> int:
    """A quick check on its own local head: `python -m bench.limits`."""
    import json

    from bench.serving import bench_spec
    from devstack import deploy, local_head, throwaway_home
    from serving.keys import generate_key

    with throwaway_home("gale-bench-home-"), local_head() as client:
        spec = bench_spec()
        key, record = generate_key("bench")
        deploy(client, spec, [record], 600)
        target = Target(client.config.serve_url + f"/{spec.name}/v1", key, spec.name)
        print(json.dumps(limits_overhead(client, target, rounds=2), indent=2))
    print(json.dumps(admission_cost(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
