"""`gale cluster up|down|status`: the embedded local Ray head."""

from __future__ import annotations

from typing import Annotated, Any

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


@cluster_app.command("join")
def join(
    address: Annotated[
        str, typer.Argument(help="The head's Ray address, HOST:PORT (port 6379 by default).")
    ],
    gpus: Annotated[
        int | None, typer.Option(help="GPUs to declare (default: the ones Ray finds).")
    ] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="Accelerator type of those GPUs, e.g. L4 or A10G.")
    ] = None,
    cpus: Annotated[int | None, typer.Option(help="Logical CPUs to declare.")] = None,
    memory: Annotated[float | None, typer.Option(help="Logical memory to declare, in GiB.")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="NAME",
            help="Pass this environment variable to the node's replicas (repeatable), "
            "e.g. HF_TOKEN.",
        ),
    ] = None,
    block: Annotated[
        bool, typer.Option(help="Stay in the foreground; Ctrl-C or SIGTERM stops the node.")
    ] = False,
) -> None:
    """Add this machine to a Ray head as a worker node (Ray's `ray start --address`, token auth)."""
    from gale_cli.nodes import join as join_head

    join_head(
        address,
        env=env or (),
        gpus=gpus,
        accelerator=accelerator,
        cpus=cpus,
        memory_gb=memory,
        block=block,
    )
    output.message(f"Joined {address}. `gale cluster status` lists the nodes; `ray stop` leaves.")


@cluster_app.command("status")
def status(json_out: Json = False) -> None:
    """Whether the head is up, its nodes with their resources, and which replicas run where."""
    from gale_cli.local_head import local_head_status

    info = local_head_status()
    nodes = _nodes() if info.running else []

    def show() -> None:
        if not info.running:
            output.message(
                f"No Ray head answers at {info.dashboard_url}. Start one: `gale cluster up`."
            )
            raise typer.Exit(1)
        output.message(f"Ray is up: dashboard {info.dashboard_url}, endpoints {info.serve_url}")
        _resources(info.resources)
        output.table(
            ["Node", "Address", "Role", "State", "Resources", "Replicas"],
            (
                (
                    n["node_id"][:8],
                    n["ip"],
                    n["role"],
                    n["state"],
                    n["resources_text"],
                    ", ".join(f"{r['application']} ({r['state'].lower()})" for r in n["replicas"])
                    or "—",
                )
                for n in nodes
            ),
            title="Nodes",
        )
        head = next((n for n in nodes if n["role"] == "head"), None)
        if head:
            output.message(f"Add a node: gale cluster join {head['ip']}:6379 (with the Ray token)")

    data = {
        "running": info.running,
        "dashboard_url": info.dashboard_url,
        "serve_url": info.serve_url,
        "resources": info.resources,
        "nodes": nodes,
    }
    output.result(data, show)


def _nodes() -> list[dict[str, Any]]:
    from gale_cli.cluster import ServeClient
    from gale_cli.connection import ClusterConfig
    from gale_cli.nodes import nodes_of, replicas_of, resources_text

    with ServeClient(ClusterConfig.from_env()) as client:
        nodes = nodes_of(client.nodes())
        placed = replicas_of(client.get_applications().get("applications") or {})
    return [
        {
            "node_id": n.node_id,
            "ip": n.ip,
            "role": "head" if n.is_head else "worker",
            "state": "alive" if n.alive else "lost",
            "message": n.message,
            "resources": n.resources,
            "resources_text": resources_text(n.resources),
            "replicas": [
                {"application": p.application, "replica_id": p.replica_id, "state": p.state}
                for p in placed
                if p.node_id == n.node_id
            ],
        }
        for n in nodes
    ]


def _resources(resources: dict[str, float]) -> None:
    from serving.catalog import GIB

    rows = []
    for key, value in sorted(resources.items()):
        if key.startswith("node:"):
            continue
        shown = f"{value / GIB:.1f} GiB" if "memory" in key else f"{value:g}"
        rows.append((key, shown))
    output.table(["Resource", "Total"], rows)
