"""Serving throughput: the HTTP endpoint against the same engine in-process (`make bench-serving`).

Each cell (batch size, concurrency) runs in-process and through the endpoint in
alternating rounds on one event loop, so machine noise hits both alike. The endpoint
is a real local Ray head with the app submitted as gale submits it
(`to_serve_application` + `ServeClient.apply_application`); its batch size changes
in place through `user_config`, confirmed on `/health`, as the engine's does in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.live import health, update_live
from bench.load import (
    MAX_TOKENS,
    Run,
    Target,
    closed_loop,
    endpoint_sender,
    engine_sender,
    http_client,
)
from bench.report import machine
from devstack import BUNDLED_MODEL, deploy, eventually, local_head, throwaway_home
from gale_cli.cluster import ServeClient
from serving.engines.base import Engine
from serving.engines.factory import load_engine
from serving.keys import generate_key
from serving.spec import DeploymentSpec

NAME = "bench"
GAIN_TARGET = 3.5
ENDPOINT_TARGET = 0.85
DEFAULT_OUT = Path("bench-results/serving.json")
DEPLOY_TIMEOUT_S = 900
RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness


def bench_spec(name: str = NAME, engine: str = "auto", **changes: Any) -> DeploymentSpec:
    """The benchmarked deployment: the bundled model on the cpu profile, greedy."""
    values: dict[str, Any] = {
        "name": name,
        "model": BUNDLED_MODEL,
        "hardware": "cpu",
        "engine": engine,
        "temperature": 0,
        "max_length": 64,
        "batch_size": 8,
    }
    return DeploymentSpec.model_validate({**values, **changes})


def load_inprocess(spec: DeploymentSpec) -> tuple[Engine, float]:
    """The same engine the replica runs, with the replica's thread count; and its load time."""
    import torch

    # Ray gives a replica OMP_NUM_THREADS = its num_cpus: match it.
    torch.set_num_threads(spec.profile.cpus)
    # Ray also starts workers at niceness 15: run the reference (and this process's HTTP
    # clients) at the same priority, so load from elsewhere on the machine hits both alike.
    current = os.nice(0)
    if current < RAY_WORKER_NICENESS:
        os.nice(RAY_WORKER_NICENESS - current)
    started = time.monotonic()
    engine = load_engine(spec.model, spec.hardware, batch_size=spec.batch_size, engine=spec.engine)
    return engine, time.monotonic() - started


def set_batch_size(client: ServeClient, target: Target, engine: Engine, size: int) -> None:
    """Change the batch size in place on the endpoint (seen on /health) and in-process."""
    update_live(client, target.model, batch_size=size)
    serve_url = target.base_url.rsplit("/", 2)[0]
    eventually(
        lambda: (health(serve_url, target.model) or {}).get("batch_size") == size,
        # In place for transformers; vLLM sizes its batch at start-up (new replicas).
        600,
        f"batch size {size} applied",
    )
    engine.set_batch_size(size)


def requests_per_client(concurrency: int, quick: bool) -> int:
    """Requests each client sends per round: enough tokens to time, few enough to stay short."""
    if concurrency == 1:
        return 2 if quick else 3
    return 1


async def _paired(
    engine: Engine,
    target: Target,
    concurrency: int,
    rounds: int,
    per_worker: int,
    stream: bool,
    max_tokens: int,
) -> tuple[Run, Run]:
    inproc: list[Run] = []
    endpoint: list[Run] = []
    async with http_client(concurrency) as http:
        via_http = endpoint_sender(http, target, max_tokens, stream)
        direct = engine_sender(engine, max_tokens, stream)
        # Warm both paths (connections, first-call costs) with a short request, then alternate.
        await closed_loop(engine_sender(engine, 4, stream), 1, per_worker=1)
        await closed_loop(endpoint_sender(http, target, 4, stream), 1, per_worker=1)
        for _ in range(rounds):
            inproc.append(await closed_loop(direct, concurrency, per_worker=per_worker))
            endpoint.append(await closed_loop(via_http, concurrency, per_worker=per_worker))
    return Run.merge(inproc), Run.merge(endpoint)


def measure_cell(
    engine: Engine,
    target: Target,
    batch_size: int,
    concurrency: int,
    *,
    quick: bool,
    stream: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> dict[str, Any]:
    """One cell: in-process and endpoint figures at one batch size and concurrency."""
    rounds = 1 if quick else 2
    inproc, endpoint = asyncio.run(
        _paired(
            engine,
            target,
            concurrency,
            rounds,
            requests_per_client(concurrency, quick),
            stream,
            max_tokens,
        )
    )
    cell: dict[str, Any] = {
        "batch_size": batch_size,
        "concurrency": concurrency,
        "stream": stream,
        "max_tokens": max_tokens,
        "in_process": inproc.summary(),
        "endpoint": endpoint.summary(),
    }
    ratio = _ratio(endpoint.tokens_per_s, inproc.tokens_per_s)
    cell["endpoint_ratio"] = ratio
    print(
        f"  bs {batch_size:>2} c {concurrency:>2} {'stream' if stream else 'whole '}: "
        f"in-process {inproc.tokens_per_s:6.1f} tok/s, endpoint {endpoint.tokens_per_s:6.1f} "
        f"tok/s ({ratio}), failed {cell['endpoint']['failed']}",
        flush=True,
    )
    return cell


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def find(
    cells: list[dict[str, Any]], batch_size: int, concurrency: int, stream: bool = False
) -> dict[str, Any] | None:
    """The cell measured at this batch size and concurrency (None when not measured)."""
    return next(
        (
            c
            for c in cells
            if c["batch_size"] == batch_size
            and c["concurrency"] == concurrency
            and c["stream"] == stream
        ),
        None,
    )


def ratios(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Batching gain (bs 8 / bs 1 at concurrency 8) and endpoint / in-process at 8."""
    bs8, bs1 = find(cells, 8, 8), find(cells, 1, 8)
    assert bs8 is not None and bs1 is not None
    streamed = find(cells, 8, 8, stream=True)
    gain_endpoint = _ratio(bs8["endpoint"]["tokens_per_s"], bs1["endpoint"]["tokens_per_s"])
    gain_inproc = _ratio(bs8["in_process"]["tokens_per_s"], bs1["in_process"]["tokens_per_s"])
    endpoint = bs8["endpoint_ratio"]
    return {
        "batching_gain_endpoint": gain_endpoint,
        "batching_gain_in_process": gain_inproc,
        "batching_gain_target": GAIN_TARGET,
        "batching_gain_met": gain_endpoint is not None and gain_endpoint >= GAIN_TARGET,
        "endpoint_over_in_process_at_8": endpoint,
        "endpoint_target": ENDPOINT_TARGET,
        "endpoint_met": endpoint is not None and endpoint >= ENDPOINT_TARGET,
        "endpoint_over_in_process_streamed_at_8": streamed and streamed["endpoint_ratio"],
    }


def run(quick: bool = False, engine_name: str = "auto") -> dict[str, Any]:
    """Deploy the bundled model on a fresh local head and measure the four cells."""
    started = time.monotonic()
    with throwaway_home("gale-bench-home-"), local_head() as client:
        spec = bench_spec(engine=engine_name)
        key, record = generate_key("bench")
        deploy_s = deploy(client, spec, [record], DEPLOY_TIMEOUT_S)
        print(f"deployed '{spec.name}' in {deploy_s:.1f}s", flush=True)
        target = Target(client.config.serve_url + f"/{spec.name}/v1", key, spec.name)
        engine, load_s = load_inprocess(spec)
        print(f"in-process engine loaded in {load_s:.1f}s", flush=True)
        cells = []
        for batch_size in (1, 8):
            set_batch_size(client, target, engine, batch_size)
            for concurrency in (1, 8):
                cells.append(measure_cell(engine, target, batch_size, concurrency, quick=quick))
        # Streamed: every token crosses the proxy, the ingress and the model's replica.
        for concurrency in (1, 8):
            cells.append(measure_cell(engine, target, 8, concurrency, quick=quick, stream=True))
        asyncio.run(engine.close())
    result = {
        "benchmark": "bench-serving",
        "machine": machine(),
        "model": BUNDLED_MODEL,
        "engine": engine_name,
        "max_tokens": MAX_TOKENS,
        "quick": quick,
        "deploy_s": round(deploy_s, 1),
        "in_process_load_s": round(load_s, 1),
        "cells": cells,
        "ratios": ratios(cells),
        "duration_s": round(time.monotonic() - started, 1),
    }
    return result


def report(result: dict[str, Any]) -> str:
    """The human summary printed at the end."""
    r = result["ratios"]
    m = result["machine"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"load average {m['load_average']}",
        f"{'batch':>5} {'conc':>4}  {'in-process':>10} {'endpoint':>9} {'ratio':>6} (s: streamed)",
    ]
    for cell in result["cells"]:
        lines.append(
            f"{cell['batch_size']:>5} {cell['concurrency']:>4}{'s' if cell['stream'] else ' '}"
            f"{cell['in_process']['tokens_per_s']:>11.1f} "
            f"{cell['endpoint']['tokens_per_s']:>9.1f} {cell['endpoint_ratio']!s:>6}"
        )
    lines.append(
        f"batching gain at concurrency 8 (bs 8 / bs 1), endpoint: {r['batching_gain_endpoint']}x "
        f"(in-process {r['batching_gain_in_process']}x); target >= {GAIN_TARGET}x: "
        f"{'met' if r['batching_gain_met'] else 'MISSED'}"
    )
    lines.append(
        f"endpoint / in-process at concurrency 8: {r['endpoint_over_in_process_at_8']}; "
        f"target >= {ENDPOINT_TARGET}: {'met' if r['endpoint_met'] else 'MISSED'}"
    )
    if r.get("endpoint_over_in_process_streamed_at_8") is not None:
        lines.append(
            "endpoint / in-process at concurrency 8, streamed: "
            f"{r['endpoint_over_in_process_streamed_at_8']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.serving [--quick] [--out FILE] [--engine NAME]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON file")
    parser.add_argument("--engine", default="auto", help="auto, transformers or vllm")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, engine_name=args.engine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
