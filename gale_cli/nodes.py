"""The cluster's nodes: joining one to a head, and which replica runs on which.

A node joins with Ray's own `ray start --address` from this Python environment,
with the same token authentication as the head gale starts and the GPUs and
accelerator type it has (or declares). Everything else reads the dashboard's
State API (`/api/v0/nodes`) and Serve's application details: pure functions
over that JSON, so the wording is table-tested without a cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gale_cli import placement
from gale_cli.connection import ClusterConfig
from gale_cli.errors import ClusterError, UsageError
from gale_cli.local_head import head_environment, ray_environment, ray_executable
from serving import serve_config
from serving.catalog import GIB

GCS_PORT = 6379
# A second node on the head's machine needs its own agent port (the head's is 52365).
AGENT_PORT = 52366


@dataclass(frozen=True)
class Node:
    """One Ray node as the State API reports it."""

    node_id: str
    ip: str
    alive: bool
    is_head: bool
    resources: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def short_id(self) -> str:
        """The first 8 characters of its id, as Ray's own tools show it."""
        return self.node_id[:8]

    @property
    def label(self) -> str:
        """How gale names it: short id, address and role."""
        return f"{self.short_id} ({self.ip}, {'head' if self.is_head else 'worker'})"


def nodes_of(rows: Iterable[Mapping[str, Any]]) -> list[Node]:
    """Nodes from the State API's rows, the head first, then alive before lost."""
    found = [
        Node(
            node_id=str(row.get("node_id", "")),
            ip=str(row.get("node_ip", "")),
            alive=row.get("state") == "ALIVE",
            is_head=bool(row.get("is_head_node")),
            resources={k: float(v) for k, v in (row.get("resources_total") or {}).items()},
            message=str(row.get("state_message") or ""),
        )
        for row in rows
    ]
    return sorted(found, key=lambda n: (not n.is_head, not n.alive, n.node_id))


@dataclass(frozen=True)
class Placed:
    """One replica and the node it runs on."""

    application: str
    replica_id: str
    state: str
    node_id: str


def replicas_of(applications: Mapping[str, Mapping[str, Any]]) -> list[Placed]:
    """Every replica of every application (Serve's details), with its node."""
    return [
        Placed(name, str(r.get("replica_id", "")), str(r.get("state", "")), str(r.get("node_id")))
        for name, app in applications.items()
        for r in serve_config.model_status(app).get("replicas") or []
    ]


def node_label(node_id: str | None, nodes: Iterable[Node]) -> str:
    """A replica's node as gale names it ('not placed yet' before it has one)."""
    if not node_id or node_id == "None":
        return "not placed yet"
    for node in nodes:
        if node.node_id == node_id:
            return node.label
    return node_id[:8]


def lost_nodes(nodes: Iterable[Node], actor_options: Mapping[str, Any] | None) -> list[Node]:
    """Lost nodes that could hold a replica with these options (and no alive node can)."""
    needs = placement.replica_needs(actor_options)
    nodes = list(nodes)
    if placement.shortfall(needs, [n.resources for n in nodes if n.alive]) is None:
        return []
    return [n for n in nodes if not n.alive and placement.shortfall(needs, [n.resources]) is None]


def resources_text(resources: Mapping[str, float]) -> str:
    """'4 CPU, 16 GiB, 1 × L4' for a node's logical resources."""
    parts = [f"{resources.get('CPU', 0):g} CPU", f"{resources.get('memory', 0) / GIB:.0f} GiB"]
    for key, value in sorted(resources.items()):
        if key.startswith("accelerator_type:"):
            parts.append(f"{resources.get('GPU', value):g} × {key.split(':', 1)[1]}")
    if resources.get("GPU") and not any(k.startswith("accelerator_type:") for k in resources):
        parts.append(f"{resources['GPU']:g} GPU")
    return ", ".join(parts)


def join_command(
    address: str,
    *,
    gpus: int | None = None,
    accelerator: str | None = None,
    cpus: int | None = None,
    memory_gb: float | None = None,
    block: bool = False,
) -> list[str]:
    """The `ray start --address` command line that joins this machine to a head."""
    if accelerator and not gpus:
        raise UsageError(
            "--accelerator needs --gpus: how many GPUs of that type this node has",
            hint="e.g. gale cluster join HEAD:6379 --gpus 1 --accelerator L4",
        )
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "")
    if not host or (port and not port.isdigit()):
        raise UsageError(
            f"'{address}' is not a head address",
            hint=f"give HOST:PORT of the head's Ray port (default {GCS_PORT}), "
            "as `gale cluster status` shows it",
        )
    command = [
        str(ray_executable()),
        "start",
        f"--address={host}:{port or GCS_PORT}",
        f"--dashboard-agent-listen-port={AGENT_PORT}",
        "--disable-usage-stats",
    ]
    if cpus is not None:
        command.append(f"--num-cpus={cpus}")
    if memory_gb is not None:
        command.append(f"--memory={int(memory_gb * GIB)}")
    if gpus is not None:
        command.append(f"--num-gpus={gpus}")
    if accelerator:
        command.append("--resources=" + json.dumps({f"accelerator_type:{accelerator}": gpus}))
    if block:
        command.append("--block")
    return command


def join(
    address: str,
    *,
    config: ClusterConfig | None = None,
    env: Iterable[str] = (),
    **options: Any,
) -> None:
    """Start a Ray worker node here that joins the head at `address` (token auth)."""
    import os

    config = config or ClusterConfig.from_env()
    command = join_command(address, **options)
    head_environment(os.environ, env)  # a bad --env fails before anything starts
    if not config.token:
        raise UsageError(
            "no Ray token: the head refuses nodes without it",
            hint="set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the head's token; on a head "
            "gale started it is in $GALE_HOME/ray-token on that machine",
        )
    node_env = ray_environment(config, config.token, env)
    # Not the caller's directory: replicas must find `serving` as installed.
    config.gale_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if options.get("block"):
        os.chdir(config.gale_home)
        # In the foreground until stopped: Ray drains and stops the node on SIGTERM.
        os.execve(command[0], command, node_env)
    result = subprocess.run(
        command, env=node_env, capture_output=True, text=True, check=False, cwd=config.gale_home
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ClusterError(f"`ray start --address` failed:\n{tail.replace(config.token, '***')}")


def where_replicas_run(
    app: Mapping[str, Any], node_rows: Iterable[Mapping[str, Any]]
) -> tuple[list[dict[str, str]], str | None]:
    """An application's replicas with their nodes, and which lost node it misses, if any.

    A replica on a lost node is gone from Serve's list: what is left is a replacement
    waiting to be placed. When no alive node could hold it but a lost one could,
    that lost node is what the deployment waits for.
    """
    nodes = nodes_of(node_rows)
    rows = [
        {
            "replica_id": p.replica_id,
            "state": p.state,
            "node_id": "" if p.node_id == "None" else p.node_id,
            "node": node_label(p.node_id, nodes),
        }
        for p in replicas_of({str(app.get("name", "")): app})
    ]
    if all(r["state"] == "RUNNING" for r in rows) and rows:
        return rows, None
    options = serve_config.model_config(app.get("deployed_app_config") or {}).get(
        "ray_actor_options"
    )
    lost = lost_nodes(nodes, options)
    if not lost:
        return rows, None
    names = ", ".join(n.label for n in lost)
    return rows, f"node {names} was lost, and no other node has the hardware"
