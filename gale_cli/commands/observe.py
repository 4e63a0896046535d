"""Watching deployments: `gale top` and `gale logs`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from gale_cli import output
from gale_cli.commands.options import Json, Name
from gale_cli.errors import UsageError

Interval = Annotated[
    float,
    typer.Option("--interval", "-n", help="Seconds between reads (rates are over this interval)."),
]
# Left out, first to last, while the table would not fit the terminal.
OPTIONAL = ("Min-max", "Cache", "TPOT p50/p95", "Batch", "Running", "Status", "Err/s")


def top(
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Only this deployment.")
    ] = None,
    interval: Interval = 2.0,
    json_out: Json = False,
) -> None:
    """Each deployment's replicas, requests and tokens per second, latency and errors, live.

    Rates and latency come from the replicas' metrics, read twice `--interval` apart.
    With --json, print one snapshot and exit.
    """
    from gale_cli.metrics_reader import MetricsReader
    from gale_cli.session import open_session
    from gale_cli.top import Top, summarize

    if not 0.1 <= interval <= 3600:
        raise UsageError(f"--interval is {interval:g}; give seconds between 0.1 and 3600")
    with open_session() as session, MetricsReader(session.config) as reader:
        watch = Top(session.client, reader)

        def frames() -> Iterator[list[dict[str, Any]]]:
            before = watch.read()
            while True:
                time.sleep(interval)
                after = watch.read()
                rows = summarize(before, after, name)
                if name is not None and not rows:
                    raise UsageError(f"no deployment named '{name}' is running")
                yield rows
                before = after

        output.watch(frames(), _table, "gale top (Ctrl-C to stop)", optional=OPTIONAL)


def logs(
    name: Name,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing lines as they are written.")
    ] = False,
    replica: Annotated[
        str | None, typer.Option("--replica", help="Only this replica (its id or a prefix).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only lines from this long ago: 30s, 10m, 2h, 1d.")
    ] = None,
    tail: Annotated[int, typer.Option("--tail", help="Lines to read from each replica.")] = 1000,
) -> None:
    """The replicas' logs, newest last; API keys and the Ray token are masked."""
    from gale_cli.logs import LogReader, parse_since
    from gale_cli.session import open_session

    if not 1 <= tail <= 100_000:
        raise UsageError(f"--tail is {tail}; give a number of lines between 1 and 100000")
    start = time.time() - parse_since(since) if since is not None else None
    with open_session() as session:
        reader = LogReader(session.client)
        found = reader.replicas(name, replica)
        if not found:
            output.message(f"'{name}' has no replica with a log yet")
            return
        if follow:
            output.lines(reader.follow(found, tail, start))
        else:
            output.lines(reader.lines(found, tail, start))


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    columns = ["Name", "Status", "Replicas", "Min-max", "Running", "Queued", "Batch", "Cache"]
    columns += ["Req/s", "Tok/s"]
    columns += ["TTFT p50/p95", "TPOT p50/p95", "Err/s"]
    cells = []
    for r in rows:
        ttft, tpot = r["time_to_first_token_s"], r["time_per_output_token_s"]
        replicas = r["replicas"]
        cells.append(
            [
                r["name"],
                r["status"],
                f"{replicas['running']}/{replicas['target']}",
                f"{replicas['min']}-{replicas['max']}",
                r["requests_running"],
                r["requests_queued"],
                _percent(r["batch_occupancy"]),
                _percent(r["cache_usage"]),
                f"{r['requests_per_s']:.2f}",
                f"{r['completion_tokens_per_s']:.1f}",
                f"{_seconds(ttft['p50'])}/{_seconds(ttft['p95'])}",
                f"{_seconds(tpot['p50'])}/{_seconds(tpot['p95'])}",
                f"{r['errors_per_s']:.2f}",
            ]
        )
    return columns, cells
