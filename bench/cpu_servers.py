"""gale on CPU against every CPU server: each engine and `auto`, `vllm serve`, `llama-server`.

    python -m bench.cpu_servers [--quick] [--levels 1,8,32,64]    (make bench-cpu)

One run on one machine, the bundled model, greedy chat completions of 48 tokens
in closed loops at concurrency 1, 8, 32 and 64. The two reference servers run
beside the local Ray head for the whole run: `vllm serve` (its API server
module, this environment's vLLM CPU build, max_num_seqs 64, 1.5 GiB KV cache)
and `llama-server` (the binary the llama.cpp engine runs, started with the
engine's own settings for batch size 64). gale's deployments (engine
transformers, vllm, llamacpp, then auto; batch size 64, the `cpu` profile) are
deployed one at a time, and at every level each deployment is measured with the
two references right after it, so every gale figure has references measured
within the same minute. Whatever is measured runs with the other reference
server stopped (SIGSTOP, `alone`), and llama-server is started afresh for each
gale deployment, as each deployment is new. Also the resident memory of each replica with the
processes it started (llama-server, vLLM's engine core). Writes
bench-results/cpu_servers.json and docs/cpu-servers.{md,png}.
Starts its own Ray head: run it under `flock /tmp/gale-cluster.lock`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.load import MAX_TOKENS
from bench.report import machine
from bench.vllm_vs_serve import KV_CACHE_GB, MAX_NUM_SEQS, VLLM_PORT, closed_loop, vllm_serve
from devstack import BUNDLED_MODEL, deploy, eventually, local_head, throwaway_home
from gale_cli.cluster import ServeClient
from serving import catalog
from serving.engines.llamacpp_server import (
    gguf_shape,
    require_server_binary,
    server_env,
    server_settings,
    start_server,
)
from serving.keys import generate_key
from serving.model_cache import hf_folder
from serving.model_source import resolve
from serving.serve_config import model_status
from serving.spec import DeploymentSpec

ENGINES = ("transformers", "vllm", "llamacpp", "auto")
LEVELS = (1, 8, 32, 64)
START_TIMEOUT_S = 600
PAGE = Path("docs/cpu-servers.md")
PLOT = Path("docs/cpu-servers.png")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and everything it started."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return total


def replica_pids(client: ServeClient, name: str) -> list[int]:
    app = client.get_application(name) or {}
    return [
        replica["pid"]
        for replica in model_status(app).get("replicas", [])
        if replica["state"] == "RUNNING"
    ]


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference server: where it answers, and the processes to hold still meanwhile."""

    url: str
    pid: int
    group: bool = False
    """`pid` is a process group (vllm serve: its API server and engine core)."""

    def signal(self, sig: signal.Signals) -> None:
        (os.killpg if self.group else os.kill)(self.pid, sig)


@contextlib.contextmanager
def alone(measured: Reference | None, references: dict[str, Reference]) -> Iterator[None]:
    """Stop every reference but `measured` for the block (SIGSTOP, then SIGCONT).

    An idle server is not idle on 2 cores: vLLM's CPU worker took 17% of a core with
    nothing to do, and llama.cpp's threads, which wait for each other at every step,
    lose far more than that to it. Whatever is measured runs with the others frozen.
    """
    held = [ref for ref in references.values() if ref is not measured]
    for ref in held:
        ref.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for ref in held:
            ref.signal(signal.SIGCONT)


@contextlib.contextmanager
def llama_server() -> Iterator[tuple[Reference, dict[str, Any]]]:
    """llama-server with the settings the engine gives a batch size of 64 on `cpu`."""
    source = resolve(BUNDLED_MODEL)
    path = str(Path(source.location) / str(source.gguf_file))
    settings = server_settings(
        catalog.hardware()["cpu"],
        gguf_shape(path),
        Path(path).stat().st_size,
        MAX_NUM_SEQS,
        source.context_length,
    )
    server = start_server(require_server_binary(), path, settings)
    try:
        yield (
            Reference(f"{server.url}/v1/chat/completions", server.process.pid),
            {
                "slots": settings.parallel,
                "context_size": settings.context_size,
                "threads": settings.threads,
                "GOMP_SPINCOUNT": server_env().get("GOMP_SPINCOUNT"),
            },
        )
    finally:
        server.stop()


def measure_level(url: str, model: str, headers: dict[str, str], level: int, rounds: int) -> float:
    result = asyncio.run(closed_loop(url, model, headers, level, rounds))
    return float(result["tokens_per_s"])


def run(levels: tuple[int, ...], rounds: int) -> dict[str, Any]:
    """Every server at every level; references measured beside each gale deployment."""
    folder = hf_folder(resolve(BUNDLED_MODEL))
    out: dict[str, Any] = {"gale": {}, "llama_server": {}, "vllm_serve": {}}
    log = Path("bench-results/cpu_servers.vllm-serve.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with vllm_serve(folder, log) as served:
        out["vllm_serve_startup_s"] = round(served.startup_s, 1)
        vllm = Reference(
            f"http://127.0.0.1:{VLLM_PORT}/v1/chat/completions", served.process_group, group=True
        )
        with throwaway_home("gale-bench-home-"), local_head() as client:
            for engine in ENGINES:
                # A fresh llama-server beside each fresh gale deployment: a long-running one
                # has spread its requests over all its slots (prompt likeness, least recent
                # use), which halves what it serves at 8 to 32 at once (`LowestFree`).
                with llama_server() as (llama, llama_settings):
                    out["llama_server_settings"] = llama_settings
                    references = {"llama_server": llama, "vllm_serve": vllm}
                    out["gale"][engine] = gale_engine(
                        client, engine, levels, rounds, references, out
                    )
    return out


def gale_engine(
    client: ServeClient,
    engine: str,
    levels: tuple[int, ...],
    rounds: int,
    references: dict[str, Reference],
    out: dict[str, Any],
) -> dict[str, Any]:
    """Deploy the bundled model with `engine`, measure it beside the references, remove it."""
    spec = DeploymentSpec(
        name=f"bench-{engine}",
        model=BUNDLED_MODEL,
        hardware="cpu",
        engine=engine,  # type: ignore[arg-type]
        temperature=0,
        max_length=MAX_TOKENS,
        batch_size=MAX_NUM_SEQS,
    )
    key, record = generate_key("bench")
    with alone(None, references):
        startup = deploy(client, spec, [record], START_TIMEOUT_S)
    health_url = client.config.serve_url + f"/{spec.name}/health"
    url = client.config.serve_url + f"/{spec.name}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    import httpx

    device = eventually(lambda: httpx.get(health_url, timeout=10).json(), 60, "health")["device"]
    print(f"gale ({engine}): RUNNING in {startup:.1f}s on {device}", flush=True)
    result: dict[str, Any] = {"startup_s": round(startup, 1), "device": device, "levels": {}}
    for level in levels:
        with alone(None, references):
            ours = measure_level(url, spec.name, headers, level, rounds)
        result["levels"][str(level)] = ours
        line = [f"  c{level}: gale {engine} {ours}"]
        for name, reference in references.items():
            with alone(reference, references):
                theirs = measure_level(reference.url, "smol", {}, level, rounds)
            out[name].setdefault(str(level), []).append(theirs)
            result.setdefault("beside", {}).setdefault(name, {})[str(level)] = theirs
            line.append(f"{name} {theirs}")
        print(", ".join(line), flush=True)
    result["rss_mb"] = round(sum(rss_bytes(pid) for pid in replica_pids(client, spec.name)) / 2**20)
    client.remove_application(spec.name)
    client.wait_for_removal(spec.name, 120, poll_interval=0.5)
    return result


def page(result: dict[str, Any]) -> str:
    """The published table: tokens/s per server and level, auto's ratios, memory."""
    levels = result["levels"]
    m = result["machine"]

    def ref(name: str, level: int) -> float:
        return round(statistics.median(result[name][str(level)]), 1)

    auto = result["gale"]["auto"]
    lines = [
        "# gale on CPU against CPU servers",
        "",
        f"Run {result['when']} with `make bench-cpu` on {m['cores']} cores ({m['cpu_model']}, "
        f"load average {m['load_average']} before the run). Bundled model {BUNDLED_MODEL} "
        f"(GGUF, Q4_1), greedy chat completions of {MAX_TOKENS} tokens, closed-loop clients, "
        f"{result['rounds']} request(s) per client per level. gale: the `cpu` profile, batch "
        f"size {MAX_NUM_SEQS}. `vllm serve`: this environment's vLLM CPU build, max_num_seqs "
        f"{MAX_NUM_SEQS}, {KV_CACHE_GB} GiB KV cache. `llama-server`: the binary the llama.cpp "
        f"engine runs, with the engine's settings ({result['llama_server_settings']}). "
        "References are measured right after each gale deployment at each level; their "
        "figure is the median of those. While one server is measured the reference servers "
        "not being measured are stopped (SIGSTOP; idle, vLLM's CPU worker still takes about "
        "a sixth of a core); gale's deployment stays up while the references are measured. "
        "llama-server is started afresh beside each gale deployment. Its requests reuse "
        "the KV of a prompt's start that a slot still holds (its own default, "
        "`cache_prompt`), where gale's engine computes every prompt afresh so that a greedy "
        "answer does not depend on the requests before it (docs/engines.md).",
        "",
        "| server | " + " | ".join(f"c{level} tok/s" for level in levels) + " | start-up |",
        "| --- | " + " | ".join("---" for _ in levels) + " | --- |",
    ]
    for engine, data in result["gale"].items():
        cells = " | ".join(str(data["levels"][str(level)]) for level in levels)
        lines.append(f"| gale, {engine} ({data['device']}) | {cells} | {data['startup_s']} s |")
    for name, label in (("llama_server", "`llama-server`"), ("vllm_serve", "`vllm serve`")):
        cells = " | ".join(str(ref(name, level)) for level in levels)
        startup = f"{result['vllm_serve_startup_s']} s" if name == "vllm_serve" else ""
        lines.append(f"| {label} | {cells} | {startup} |")
    lines += ["", "gale `auto` over the references measured beside it:", ""]
    lines += ["| against | " + " | ".join(f"c{level}" for level in levels) + " |"]
    lines += ["| --- | " + " | ".join("---" for _ in levels) + " |"]
    for name, label in (("llama_server", "`llama-server`"), ("vllm_serve", "`vllm serve`")):
        ratios = [
            round(auto["levels"][str(level)] / auto["beside"][name][str(level)], 2)
            for level in levels
        ]
        lines.append(f"| {label} | " + " | ".join(str(r) for r in ratios) + " |")
    lines += ["", "Resident memory of a replica and the processes it started, after the run:", ""]
    lines += ["| engine | MB |", "| --- | --- |"]
    for engine, data in result["gale"].items():
        lines.append(f"| {engine} | {data['rss_mb']} |")
    lines += [
        "",
        "A replica's memory is its Python process (the API, the tokenizer, torch) plus what "
        "it started: for llama.cpp, llama-server with the GGUF's weights as they are "
        "(quantized; the AMX build repacks them) and a 16-bit KV cache of "
        f"{result['llama_server_settings']['context_size']} tokens sized from the profile "
        "(split between the slots when each gets at least 1024 tokens, docs/engines.md); "
        "for vLLM, its engine core with bfloat16 weights and its "
        "KV cache. The machine is shared: figures move between runs, ratios within one "
        "minute of each other are what this page compares.",
        "",
        f"![tokens/s by concurrency]({PLOT.name})",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine, data in result["gale"].items():
        ax.plot(
            levels, [data["levels"][str(c)] for c in levels], marker="o", label=f"gale {engine}"
        )
    for name, label in (("llama_server", "llama-server"), ("vllm_serve", "vllm serve")):
        ys = [statistics.median(result[name][str(c)]) for c in levels]
        ax.plot(levels, ys, marker="s", linestyle="--", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("generated tokens/s")
    ax.set_title(f"bundled model on {result['machine']['cores']} CPU cores")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one request per client per level")
    parser.add_argument("--levels", default=",".join(str(c) for c in LEVELS))
    parser.add_argument("--out", default="bench-results/cpu_servers.json")
    args = parser.parse_args(argv)
    levels = tuple(int(c) for c in args.levels.split(","))
    rounds = 1 if args.quick else 2
    before = machine()
    result = run(levels, rounds)
    result.update(
        levels=list(levels),
        rounds=rounds,
        machine=before,
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    PAGE.write_text(page(result))
    plot(result)
    print(f"wrote {out}, {PAGE} and {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
