"""`gale cluster up|down|status`: the embedded local Ray head."""

from __future__ import annotations

from typing import Annotated

import typer

from gale_cli import output
from gale_cli.commands.options import Json

cluster_app = typer.Typer(
    help="Start, stop or inspect the local Ray cluster.", no_args_is_help=True
)


@cluster_app.command("up")
def up(
    gpus: Annotated[int, typer.Option(help="Logical GPUs to declare (no real GPU needed).")] = 0,
    accelerator: Annotated[
        str | None, typer.Option(help="Accelerator type of the declared GPUs, e.g. A10G.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="NAME",
            help="Pass this environment variable to Ray and the replicas (repeatable); "
            "by default they get only what Ray and the engines need.",
        ),
    ] = None,
) -> None:
    """Start a local Ray head (loopback only, token auth) with Serve's HTTP proxy."""
    from gale_cli.local_head import start_local_head

    with output.Spinner("Starting the local Ray head…"):
        status = start_local_head(gpus, accelerator, env=env or ())
    output.message(f"Ray is up: dashboard {status.dashboard_url}, endpoints {status.serve_url}")
    _resources(status.resources)


@cluster_app.command("down")
def down() -> None:
    """Stop the local Ray head and everything deployed on it (local state is kept)."""
    from gale_cli.local_head import stop_local_head

    if stop_local_head():
        output.message(
            "Stopped the local Ray head. `gale restore` redeploys after `gale cluster up`."
        )
    else:
        output.message("No local Ray head was running.")


@cluster_app.command("status")
def status(json_out: Json = False) -> None:
    """Whether the local head is up, and what it declares."""
    from gale_cli.local_head import local_head_status

    info = local_head_status()

    def show() -> None:
        if not info.running:
            output.message(
                f"No Ray head answers at {info.dashboard_url}. Start one: `gale cluster up`."
            )
            raise typer.Exit(1)
        output.message(f"Ray is up: dashboard {info.dashboard_url}, endpoints {info.serve_url}")
        _resources(info.resources)

    data = {
        "running": info.running,
        "dashboard_url": info.dashboard_url,
        "serve_url": info.serve_url,
        "resources": info.resources,
    }
    output.result(data, show)


def _resources(resources: dict[str, float]) -> None:
    from serving.catalog import GIB

    rows = []
    for key, value in sorted(resources.items()):
        if key.startswith("node:"):
            continue
        shown = f"{value / GIB:.1f} GiB" if "memory" in key else f"{value:g}"
        rows.append((key, shown))
    output.table(["Resource", "Total"], rows)
