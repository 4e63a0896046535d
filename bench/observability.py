"""What observing a deployment costs, and what it shows: metrics on against off, over time.

`metrics_overhead` measures the same closed-loop load on the same deployment with
the replicas' metrics on, then off (`GALE_METRICS=off` in the application's
runtime_env, a rolling restart), then on again, and reports throughput off over
on. `timeline` sends a load that steps up its concurrency and draws tokens/s,
latency and gale's own queue and occupancy gauges (as `gale top` reads them)
against time. `python -m bench.observability` runs both on a fresh local head
and writes docs/observability.{json,png}; `make bench` runs them in its suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.live import running_pids
from bench.load import Result, Run, Target, closed_loop, endpoint_sender, http_client
from bench.report import DOCS, machine
from devstack import eventually
from gale_cli.cluster import ServeClient
from gale_cli.metrics_reader import MetricsReader
from gale_cli.top import Top, summarize
from serving.metrics import ENABLED_ENV

MAX_TOKENS = 32
STEPS = (1, 4, 8, 16)  # concurrency of the timeline's load, one step after another


def set_metrics(client: ServeClient, name: str, on: bool, timeout: float = 600) -> float:
    """Turn the replicas' metrics on or off (a rolling restart); return the seconds it took."""
    wanted = None if on else {"env_vars": {ENABLED_ENV: "off"}}
    old = running_pids(client, name)
    started = time.monotonic()

    def edit(config: dict[str, Any] | None) -> dict[str, Any] | None:
        assert config is not None, f"{name} is not deployed"
        config.pop("runtime_env", None)
        if wanted is not None:
            config["runtime_env"] = wanted
        return config

    applied = client.modify_application(
        name, edit, holds=lambda live: live is not None and live.get("runtime_env") == wanted
    )
    client.wait_for_application(name, timeout, since=applied.previous_deploy_time)
    eventually(
        lambda: (pids := running_pids(client, name)) and not (pids & old),
        timeout,
        "every replica replaced",
        0.25,
    )
    return time.monotonic() - started


async def _rounds(target: Target, concurrency: int, per_worker: int, rounds: int) -> Run:
    async with http_client(concurrency) as http:
        send = endpoint_sender(http, target, MAX_TOKENS, stream=False)
        await closed_loop(endpoint_sender(http, target, 4, False), 1, per_worker=1)  # warm
        runs = [await closed_loop(send, concurrency, per_worker=per_worker) for _ in range(rounds)]
    return Run.merge(runs)


def metrics_overhead(
    client: ServeClient, target: Target, *, quick: bool, concurrency: int = 8
) -> dict[str, Any]:
    """Throughput with metrics on, off, on again (same load): the off/on ratio of tokens/s."""
    per_worker, rounds = (2, 1) if quick else (3, 2)

    def measure() -> Run:
        return asyncio.run(_rounds(target, concurrency, per_worker, rounds))

    # On, off, on: the two "on" runs bracket the "off" one, so a drift in the machine's
    # load shows as a spread between them (reported) rather than as an overhead.
    first_on = measure()
    restart_off = set_metrics(client, target.model, on=False)
    off = measure()
    restart_on = set_metrics(client, target.model, on=True)
    second_on = measure()
    on = Run.merge([first_on, second_on])
    ratio = on.tokens_per_s / off.tokens_per_s if off.tokens_per_s else None
    return {
        "concurrency": concurrency,
        "max_tokens": MAX_TOKENS,
        "metrics_on": on.summary(),
        "metrics_off": off.summary(),
        "on_over_off": round(ratio, 3) if ratio is not None else None,
        "on_runs_tokens_per_s": [round(first_on.tokens_per_s, 2), round(second_on.tokens_per_s, 2)],
        "restart_s": [round(restart_off, 1), round(restart_on, 1)],
    }


def timeline(client: ServeClient, target: Target, *, quick: bool) -> dict[str, Any]:
    """A load stepping through STEPS concurrencies; per-second tokens/s and latency from the
    clients, and gale's gauges (queue, occupancy) as `gale top` reads them meanwhile."""
    step_s = 10.0 if quick else 20.0
    done = threading.Event()
    gauges: list[dict[str, Any]] = []
    started = time.perf_counter()

    def watch() -> None:
        with MetricsReader(client.config) as reader:
            top = Top(client, reader)
            before = top.read()
            while not done.wait(2.0):
                after = top.read()
                rows = summarize(before, after, target.model)
                if rows:
                    row = rows[0]
                    gauges.append(
                        {
                            "t": round(time.perf_counter() - started, 1),
                            "queued": row["requests_queued"],
                            "occupancy": row["batch_occupancy"],
                        }
                    )
                before = after

    step_starts: list[float] = []

    async def load() -> list[Result]:
        results: list[Result] = []
        async with http_client(max(STEPS)) as http:
            send = endpoint_sender(http, target, MAX_TOKENS, stream=True)
            for concurrency in STEPS:
                # A step ends when its last request does: it may run past step_s.
                step_starts.append(round(time.perf_counter() - started, 1))
                run = await closed_loop(send, concurrency, duration=step_s)
                results.extend(run.results)
        return results

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = asyncio.run(load())
    finally:
        done.set()
        watcher.join(timeout=30)
    return {
        "steps": list(STEPS),
        "step_s": step_s,
        "step_starts_s": step_starts,
        "seconds": per_second(results, started),
        "gauges": gauges,
    }


def per_second(results: list[Result], started: float) -> list[dict[str, Any]]:
    """Tokens streamed in each second, and the TTFT of requests that started in it."""
    ok = [r for r in results if r.ok]
    if not ok:
        return []
    end = max(r.end for r in ok) - started
    rows = []
    for second in range(int(end) + 1):
        low, high = started + second, started + second + 1
        tokens = sum(1 for r in ok for at in r.chunk_times if low <= at < high)
        ttfts = sorted(r.ttft for r in ok if r.ttft is not None and low <= r.start < high)
        rows.append(
            {
                "t": second,
                "tokens_per_s": tokens,
                "ttft_ms_p50": round(ttfts[len(ttfts) // 2] * 1000, 1) if ttfts else None,
            }
        )
    return rows


def plot(result: dict[str, Any], path: Path) -> bool:
    """Tokens/s, time to first token and gale's queue and occupancy against time."""
    seconds = result.get("seconds") or []
    if not seconds:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ts = [row["t"] for row in seconds]
    tokens = [row["tokens_per_s"] for row in seconds]
    smooth = [
        sum(tokens[max(0, i - 4) : i + 1]) / len(tokens[max(0, i - 4) : i + 1])
        for i in range(len(tokens))
    ]
    axes[0].plot(ts, tokens, alpha=0.3, label="tokens/s, each second")
    axes[0].plot(ts, smooth, label="tokens/s, 5 s mean")
    axes[0].set_ylabel("tokens/s")
    with_ttft = [row for row in seconds if row["ttft_ms_p50"] is not None]
    axes[1].plot(
        [row["t"] for row in with_ttft],
        [row["ttft_ms_p50"] for row in with_ttft],
        marker=".",
        label="time to first token p50 (ms)",
    )
    axes[1].set_ylabel("ms")
    gauges = result.get("gauges") or []
    axes[2].step([g["t"] for g in gauges], [g["queued"] for g in gauges], label="queued")
    occupancy = [g for g in gauges if g["occupancy"] is not None]
    twin = axes[2].twinx()
    twin.plot(
        [g["t"] for g in occupancy],
        [g["occupancy"] for g in occupancy],
        color="tab:orange",
        label="batch occupancy",
    )
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("occupancy")
    axes[2].set_ylabel("requests queued")
    axes[2].set_xlabel("seconds")
    starts = result["step_starts_s"]
    for ax in axes:
        for begun, concurrency in zip(starts, result["steps"], strict=True):
            ax.axvline(begun, color="grey", alpha=0.3)
            if ax is axes[0]:
                ax.text(begun + 0.3, 0, f"{concurrency} clients", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    twin.legend(loc="upper right")
    fig.suptitle("gale, bundled model: a load stepping up, as gale's metrics and clients see it")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """Deploy the bundled model on a fresh local head, run both sections, write the docs."""
    from bench.suite import gale_deploy
    from devstack import local_head, throwaway_home

    parser = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter loads")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the results")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    with throwaway_home("gale-bench-home-"), local_head() as client:
        _, key = gale_deploy("auto")
        target = Target(client.config.serve_url + "/bench/v1", key, "bench")
        results["timeline"] = timeline(client, target, quick=args.quick)
        results["metrics_overhead"] = metrics_overhead(client, target, quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "observability.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results["timeline"], args.out / "observability.png")
    print(json.dumps(results["metrics_overhead"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
