"""`make bench`: every figure of the benchmark table, each beside its reference, in one run.

Sections run in order on one local head; a section that fails is recorded with its
error and the run goes on, so one broken scenario never hides the others' figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import cli_timing, constrained, observability, reactions
from bench.limits import limits_overhead
from bench.load import MAX_TOKENS, Target
from bench.report import machine
from bench.serving import bench_spec, load_inprocess, measure_cell, set_batch_size
from devstack import BUNDLED_MODEL, GALE, local_head, throwaway_home

LOAD_SCRIPT = (
    "import time; t = time.perf_counter(); import torch; torch.set_num_threads({cpus}); "
    "from serving.engines.factory import load_engine; "
    "load_engine({model!r}, {hardware!r}, engine={engine!r}); print(time.perf_counter() - t)"
)

SECTIONS = (
    "in_process_load",
    "deploy",
    "cli",
    "throughput",
    "timeline",
    "metrics_overhead",
    "limits_overhead",
    "in_place_changes",
    "rolling_redeploy_1",
    "scaling",
    "rolling_redeploy_2",
    "replica_killed",
    "constrained_decoding",
)
"""Every section of the run, in order: the names `--only` accepts."""


class Suite:
    """One run's results, filled section by section."""

    def __init__(self, quick: bool, engine: str, only: frozenset[str] | None = None) -> None:
        self.quick, self.engine, self.only = quick, engine, only
        self.results: dict[str, Any] = {
            "benchmark": "gale",
            "quick": quick,
            "engine": engine,
            "model": BUNDLED_MODEL,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine(),
            "sections": {},
            "errors": {},
        }

    def section(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one section, keep its result (or its error) and how long it took.

        With `only`, the sections it does not name are skipped, except `deploy`,
        which the others measure.
        """
        if name not in SECTIONS:
            raise ValueError(f"section {name!r} is not in SECTIONS")
        if self.only is not None and name not in self.only and name != "deploy":
            return None
        print(f"== {name}", flush=True)
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        try:
            value = fn()
        except Exception as error:
            self.results["errors"][name] = "".join(
                traceback.format_exception_only(type(error), error)
            ).strip()
            print(f"   failed: {self.results['errors'][name]}", flush=True)
            traceback.print_exc()
            return None
        self.results["sections"][name] = {
            "result": value,
            "duration_s": round(time.monotonic() - started, 1),
            "load_average_before": round(load_before, 2),
        }
        print(f"   {json.dumps(value)[:600]}", flush=True)
        return value


def inprocess_load_time(engine: str) -> float:
    """Load the bundled model in a fresh interpreter, imports included (the reference)."""
    spec = bench_spec(engine=engine)
    script = LOAD_SCRIPT.format(
        cpus=spec.profile.cpus, model=spec.model, hardware=spec.hardware, engine=spec.engine
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.profile.cpus)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-1000:])
    return round(float(done.stdout.strip().splitlines()[-1]), 1)


def gale_deploy(engine: str) -> tuple[dict[str, Any], str]:
    """`gale deploy` of the bundled model, timed until it reports Deployed; and its key."""
    argv = [
        str(GALE),
        "deploy",
        "--no-input",
        "--accept-terms",
        "--json",
        "--model",
        BUNDLED_MODEL,
        "--name",
        "bench",
        "--hardware",
        "cpu",
        "--engine",
        engine,
        "--temperature",
        "0",
        "--max-length",
        "64",
        "--batch-size",
        "8",
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"gale deploy exited {done.returncode}: {done.stderr.strip()[-800:]}")
    answer = json.loads(done.stdout)
    return {"deploy_s": round(took, 1), "status": answer["status"]}, answer["api_key"]


def run(
    quick: bool = False, engine: str = "auto", only: frozenset[str] | None = None
) -> dict[str, Any]:
    """The whole benchmark (or the sections `only` names) on a fresh local head."""
    suite = Suite(quick, engine, only)
    started = time.monotonic()
    with throwaway_home("gale-bench-home-"), local_head() as client:
        suite.section("in_process_load", lambda: {"load_s": inprocess_load_time(engine)})
        keys: list[str] = []

        def deploy() -> dict[str, Any]:
            figures, key = gale_deploy(engine)
            keys.append(key)  # kept out of the results: they are printed and published
            return figures

        if suite.section("deploy", deploy) is None:
            raise RuntimeError("gale deploy failed; nothing else can be measured")
        key = keys[0]
        target = Target(client.config.serve_url + "/bench/v1", key, "bench")
        token = client.config.token or ""
        suite.section(
            "cli", lambda: cli_timing.measure(client.config.dashboard_url, token, 3 if quick else 7)
        )
        suite.section("throughput", lambda: _throughput(client, target, quick, engine))
        suite.section("timeline", lambda: _timeline(client, target, quick))
        suite.section(
            "metrics_overhead",
            lambda: observability.metrics_overhead(client, target, quick=quick),
        )
        suite.section(
            "limits_overhead",
            lambda: limits_overhead(client, target, rounds=2 if quick else 4),
        )
        suite.section("in_place_changes", lambda: reactions.in_place_changes(client, target))
        suite.section(
            "rolling_redeploy_1", lambda: reactions.rolling_redeploy(client, target, 1, 8)
        )
        suite.section(
            "scaling",
            lambda: reactions.scale_up_and_down(
                client, target, up_delay=5, down_delay=15, concurrency=24
            ),
        )
        suite.section(
            "rolling_redeploy_2", lambda: reactions.rolling_redeploy(client, target, 2, 8)
        )
        suite.section("replica_killed", lambda: reactions.kill_replica(client, target, 8))
    # In process, no head needed: the cost of a JSON schema on each engine.
    suite.section(
        "constrained_decoding",
        lambda: [constrained.measure(name, quick) for name in constrained.ENGINES],
    )
    suite.results["machine_after"] = machine()
    suite.results["duration_s"] = round(time.monotonic() - started, 1)
    return suite.results


def _timeline(client: Any, target: Target, quick: bool) -> dict[str, Any]:
    """The load-over-time section; its picture goes beside the docs (docs/observability.png)."""
    from bench.report import DOCS

    result = observability.timeline(client, target, quick=quick)
    observability.plot(result, DOCS / "observability.png")
    return result


def _throughput(client: Any, target: Target, quick: bool, engine_name: str) -> dict[str, Any]:
    spec = bench_spec(engine=engine_name)
    engine, load_s = load_inprocess(spec)
    concurrencies = (1, 8) if quick else (1, 8, 32)
    cells = []
    try:
        set_batch_size(client, target, engine, 8)
        for concurrency in concurrencies:
            cells.append(measure_cell(engine, target, 8, concurrency, quick=quick))
        for concurrency in concurrencies:
            cells.append(measure_cell(engine, target, 8, concurrency, quick=quick, stream=True))
        set_batch_size(client, target, engine, 1)
        cells.append(measure_cell(engine, target, 1, 8, quick=quick))
        set_batch_size(client, target, engine, 8)
    finally:
        asyncio.run(engine.close())
    return {"max_tokens": MAX_TOKENS, "engine_load_s": round(load_s, 1), "cells": cells}
