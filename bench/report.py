"""The benchmark table: figures beside references, targets met or missed; JSON, markdown, PNG.

Also what every result records of the machine it was measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from serving.catalog import GIB

DOCS = Path("docs")
NOISE = 0.1  # runs of the same configuration further apart than this are not compared


def machine() -> dict[str, Any]:
    """The machine a run measured: CPU model, cores, memory, load."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) * 1024 / GIB, 1)  # kB
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _get(results: dict[str, Any], section: str) -> Any:
    entry = results["sections"].get(section)
    return entry["result"] if entry else None


def _cell(cells: list[dict[str, Any]], bs: int, c: int, stream: bool) -> dict[str, Any] | None:
    for cell in cells:
        if (cell["batch_size"], cell["concurrency"], cell["stream"]) == (bs, c, stream):
            return cell
    return None


def _row(
    figure: str,
    gale: float | None,
    reference: float | None,
    unit: str,
    target: str,
    met: bool | None,
) -> dict[str, Any]:
    ratio = round(gale / reference, 3) if gale is not None and reference else None
    return {
        "figure": figure,
        "gale": gale,
        "reference": reference,
        "unit": unit,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def _le(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark table's rows from a run's sections (missing sections give empty cells)."""
    rows: list[dict[str, Any]] = []
    cli = _get(results, "cli")
    if cli:
        for gale, ray, label in (
            ("gale_help", "serve_help", "`gale --help` vs `serve --help`"),
            ("gale_list", "serve_status", "`gale list` vs `serve status`"),
        ):
            g, r = cli[gale]["median_s"], cli[ray]["median_s"]
            rows.append(_row(label, g, r, "s", "≤ 1/3 of Ray's", _le(g, r / 3)))
    load = (_get(results, "in_process_load") or {}).get("load_s")
    deploy = (_get(results, "deploy") or {}).get("deploy_s")
    rows.append(
        _row(
            "deploy to Deployed (`gale deploy`) vs in-process model load",
            deploy,
            load,
            "s",
            "≤ load + 5 s",
            _le(deploy, None if load is None else load + 5),
        )
    )
    cells = (_get(results, "throughput") or {}).get("cells", [])
    for c in (1, 8, 32):
        cell = _cell(cells, 8, c, False)
        if cell:
            g, r = cell["endpoint"]["tokens_per_s"], cell["in_process"]["tokens_per_s"]
            target = "≥ 0.85 of in-process" if c > 1 else "—"
            met = (g >= 0.85 * r) if c > 1 else None
            rows.append(
                _row(
                    f"tokens/s at concurrency {c}, endpoint vs in-process",
                    g,
                    r,
                    "tok/s",
                    target,
                    met,
                )
            )
    bs8, bs1 = _cell(cells, 8, 8, False), _cell(cells, 1, 8, False)
    if bs8 and bs1:
        g, r = bs8["endpoint"]["tokens_per_s"], bs1["endpoint"]["tokens_per_s"]
        rows.append(
            _row(
                "batching gain at concurrency 8: batch 8 vs batch 1 (endpoint)",
                g,
                r,
                "tok/s",
                "≥ 3.5×",
                g >= 3.5 * r if r else None,
            )
        )
    for c in (1, 8, 32):
        cell = _cell(cells, 8, c, True)
        if not cell:
            continue
        e, i = cell["endpoint"], cell["in_process"]
        g, r = e["ttft_ms_p50"], i["ttft_ms_p50"]
        rows.append(
            _row(
                f"TTFT p50 at concurrency {c}",
                g,
                r,
                "ms",
                "≤ in-process + 25 ms",
                _le(g, None if r is None else r + 25),
            )
        )
        rows.append(
            _row(
                f"TTFT p99 at concurrency {c}", e["ttft_ms_p99"], i["ttft_ms_p99"], "ms", "—", None
            )
        )
        rows.append(
            _row(
                f"inter-token p50 at concurrency {c}",
                e["itl_ms_p50"],
                i["itl_ms_p50"],
                "ms",
                "—",
                None,
            )
        )
        rows.append(
            _row(
                f"inter-token p99 at concurrency {c}",
                e["itl_ms_p99"],
                i["itl_ms_p99"],
                "ms",
                "—",
                None,
            )
        )
    limits = _get(results, "limits_overhead")
    if limits:
        g, r = limits["p50_ms_on"], limits["p50_ms_off"]
        rows.append(
            _row(
                "latency p50 at concurrency 8, per-key limits on (never triggered) vs off",
                g,
                r,
                "ms",
                f"≤ off + {limits['target_added_ms']:g} ms",
                _le(g, r + limits["target_added_ms"]),
            )
        )
        admission = limits["admission"]
        rows.append(
            _row(
                "admission path alone, p50 at concurrency 8: generous limits vs none",
                admission["p50_us_on"],
                admission["p50_us_off"],
                "µs",
                "≤ none + 5000 µs",
                _le(admission["p50_us_on"], admission["p50_us_off"] + 5000),
            )
        )
    scaling = _get(results, "scaling")
    if scaling:
        ref = None if load is None else scaling["up_delay_s"] + load
        rows.append(
            _row(
                "scale-up reaction under sustained load vs delay + model load",
                scaling["up_s"],
                ref,
                "s",
                "≤ reference + 5 s",
                _le(scaling["up_s"], None if ref is None else ref + 5),
            )
        )
        rows.append(
            _row(
                "scale-down after load stops vs scale-down delay",
                scaling["down_s"],
                scaling["down_delay_s"],
                "s",
                "≤ delay + 10 s",
                _le(scaling["down_s"], scaling["down_delay_s"] + 10),
            )
        )
    changes = _get(results, "in_place_changes")
    if changes:
        same = changes["same_replicas"]
        for key, label in (
            ("key_created_s", "new API key works (`gale keys create`)"),
            ("parameter_changed_s", "parameter change applied (`gale redeploy --max-length`)"),
        ):
            value = changes[key]
            rows.append(
                _row(
                    label + (", same replicas" if same else ", REPLICAS RESTARTED"),
                    value,
                    None,
                    "s",
                    "≤ 3 s, no restart",
                    value <= 3 and same,
                )
            )
    for section, label in (
        ("rolling_redeploy_1", "failed requests, rolling redeploy under load, 1 replica"),
        ("rolling_redeploy_2", "failed requests, rolling redeploy under load, 2 replicas"),
        ("replica_killed", "failed requests, replica killed under load, 2 replicas"),
    ):
        value = _get(results, section)
        if value:
            rows.append(
                _row(
                    f"{label} (of {value['requests']})",
                    value["failed"],
                    None,
                    "requests",
                    "0",
                    value["failed"] == 0,
                )
            )
    overhead = _get(results, "metrics_overhead")
    if overhead:
        on = overhead["metrics_on"]["tokens_per_s"]
        off = overhead["metrics_off"]["tokens_per_s"]
        runs = overhead.get("on_runs_tokens_per_s") or [on]
        # The two "on" runs bracket the "off" one: when they disagree by more than the
        # effect sought, the machine's load moved and the ratio says nothing.
        spread = (max(runs) - min(runs)) / max(runs) if max(runs) else 0.0
        noisy = spread > NOISE
        label = f"tokens/s at concurrency {overhead['concurrency']}, metrics on vs off"
        if noisy:
            label += f" (noisy: the two runs with metrics on differ by {spread:.0%})"
        met = None if not off or noisy else on >= 0.97 * off
        rows.append(_row(label, on, off, "tok/s", "≥ 0.97 of off", met))
    killed = _get(results, "replica_killed")
    if killed:
        rows.append(
            _row(
                "replacement replica RUNNING after the kill",
                killed["replacement_running_s"],
                None,
                "s",
                "—",
                None,
            )
        )
    for cost in _get(results, "constrained_decoding") or []:
        rows.append(
            _row(
                f"tokens/s with a json_schema vs without ({cost['engine']})",
                cost["json_schema_tokens_per_s"],
                cost["plain_tokens_per_s"],
                "tokens/s",
                f"≥ {cost['target']} × reference",
                cost["meets_target"],
            )
        )
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def merge_rerun(
    published: dict[str, Any], rerun: dict[str, Any], sections: frozenset[str]
) -> dict[str, Any]:
    """`published` results with `sections` (and their errors) replaced by `rerun`'s, dated."""
    merged = {**published, "sections": dict(published["sections"])}
    merged["errors"] = {k: v for k, v in published.get("errors", {}).items() if k not in sections}
    merged["reruns"] = dict(published.get("reruns", {}))
    for name in sorted(sections):
        if name in rerun["sections"]:
            merged["sections"][name] = rerun["sections"][name]
        else:
            merged["sections"].pop(name, None)
        if name in rerun["errors"]:
            merged["errors"][name] = rerun["errors"][name]
        merged["reruns"][name] = rerun["started"]
    return merged


def markdown(results: dict[str, Any], rows: list[dict[str, Any]], png: str | None) -> str:
    """docs/benchmarks.md: the machine, the table, the picture, what went wrong."""
    m = results["machine"]
    after = results.get("machine_after", {})
    lines = [
        "# gale benchmarks",
        "",
        f"Run {results['started']} with `{'python -m bench --quick' if results['quick'] else 'make bench'}` "
        f"({results.get('duration_s', '?')} s) on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB; load average {m['load_average'][0]} before, "
        f"{after.get('load_average', ['?'])[0]} after. Bundled model {results['model']}, "
        f"engine `{results['engine']}`, greedy, 48 tokens per request. Each reference was measured "
        "in the same run: the same engine in-process (same thread count as a replica), Ray's own "
        "CLI, or the configured delay. Raw figures: [benchmarks.json](benchmarks.json).",
        "",
        "| figure | gale | reference | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    reruns = results.get("reruns") or {}
    if reruns:
        again = ", ".join(f"`{name}` on {when}" for name, when in sorted(reruns.items()))
        lines[3:3] = ["", f"Sections run again on their own since (`--only`): {again}."]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        unit = f" {row['unit']}"
        gale = _fmt(row["gale"]) + (unit if row["gale"] is not None else "")
        ref = _fmt(row["reference"]) + (unit if row["reference"] is not None else "")
        lines.append(
            f"| {row['figure']} | {gale} | {ref} | {_fmt(row['ratio'])} | {row['target']} | {met} |"
        )
    if png:
        lines += ["", f"![throughput and latency against concurrency]({png})"]
    if _get(results, "timeline"):
        lines += [
            "",
            "A load stepping from 1 to 16 clients, over time: tokens/s and time to first "
            "token as the clients saw them, and the queue and batch occupancy as gale's "
            "replica metrics reported them (`gale top`):",
            "",
            "![tokens/s, latency, queue and occupancy over time](observability.png)",
        ]
    if results["errors"]:
        lines += ["", "## Sections that failed", ""]
        lines += [f"- `{name}`: {error}" for name, error in results["errors"].items()]
    lines += [
        "",
        "How: `make bench` (`python -m bench`, `--quick` for a shorter run) starts a local Ray "
        "head in a throwaway GALE_HOME, deploys with `gale deploy`, and drives bounded "
        "closed-loop clients on loopback; see `bench/`. The in-process reference runs with the "
        "replica's thread count and at Ray's worker niceness (15). Figures on a shared or busy machine are "
        "noisy: compare ratios, which are measured in alternating rounds. The vLLM engine "
        "against `vllm serve`: [vllm-vs-serve.md](vllm-vs-serve.md) (`make bench-vllm`).",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    """Throughput and latency against concurrency, endpoint beside in-process."""
    cells = (_get(results, "throughput") or {}).get("cells", [])
    whole = sorted(
        (c for c in cells if c["batch_size"] == 8 and not c["stream"]),
        key=lambda c: c["concurrency"],
    )
    streamed = sorted(
        (c for c in cells if c["batch_size"] == 8 and c["stream"]), key=lambda c: c["concurrency"]
    )
    if not whole:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [
        (axes[0], whole, "tokens_per_s", "generated tokens/s"),
        (axes[1], streamed, "ttft_ms_p50", "time to first token p50 (ms)"),
        (axes[2], streamed, "itl_ms_p50", "inter-token latency p50 (ms)"),
    ]
    for ax, series, field, label in panels:
        xs = [c["concurrency"] for c in series]
        for side, name, marker in (
            ("endpoint", "gale endpoint", "o"),
            ("in_process", "in-process engine", "s"),
        ):
            ys = [c[side][field] for c in series]
            if any(y is not None for y in ys):
                ax.plot(xs, ys, marker=marker, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrent clients")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    m = results["machine"]
    fig.suptitle(f"gale on {m['cores']} cores ({m['cpu_model']}), bundled model, batch size 8")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
