"""What an application on its way to RUNNING is doing, read from Serve's status JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gale_cli import placement
from gale_cli.errors import DeployTimeout
from serving import serve_config

NodeResources = Callable[[], list[dict[str, float]]]


@dataclass(frozen=True)
class Progress:
    """One observation of an application on its way to RUNNING."""

    status: str
    message: str = ""
    replicas: dict[str, int] = field(default_factory=dict)
    waiting_for_hardware: str | None = None
    """'needs 4 × A10G per replica; the cluster has 0' while a replica cannot be placed."""
    starting: tuple[Any, ...] = ()
    """Each starting replica's phase (`gale_cli.startup.ReplicaStart`), when read."""


def progress_of(app: dict[str, Any], node_resources: NodeResources) -> Progress:
    """Summarize an application's details; asks for node resources only when stuck."""
    counts: dict[str, int] = {}
    waiting = None
    # The model's replicas: the ingress (one replica, no hardware of its own) is left out.
    name, deployment = serve_config.DEPLOYMENT_NAME, serve_config.model_status(app)
    if deployment:
        for replica in deployment.get("replicas") or []:
            counts[replica["state"]] = counts.get(replica["state"], 0) + 1
        # Serve keeps an application RUNNING while a lost replica's replacement waits.
        if waiting is None and app.get("status") in ("DEPLOYING", "RUNNING", "UNHEALTHY"):
            waiting = hardware_wait(app, name, deployment, node_resources)
    return Progress(app.get("status", "UNKNOWN"), messages(app), counts, waiting)


def hardware_wait(
    app: dict[str, Any],
    deployment_name: str,
    deployment: dict[str, Any],
    node_resources: NodeResources,
) -> str | None:
    """Why a replica of this deployment cannot be placed, or None if none is stuck."""
    states = [r.get("state") for r in deployment.get("replicas") or []]
    target = deployment.get("target_num_replicas") or 0
    if states.count("RUNNING") >= target and "STARTING" not in states:
        return None
    # Ray says so itself after 30 s; comparing with the nodes tells at once when
    # the hardware does not exist at all.
    scheduling = placement.waiting_for_scheduling(deployment.get("message", ""))
    options = _actor_options(app, deployment_name, deployment)
    needs = placement.replica_needs(options) if options is not None else None
    if needs is None and scheduling:
        needs = scheduling[0]
    if needs:
        short = placement.shortfall(needs, node_resources())
        if short:
            return short
    if scheduling is not None:
        return placement.busy(needs or scheduling[0], scheduling[1])
    return None


def _actor_options(
    app: dict[str, Any], deployment_name: str, deployment: dict[str, Any]
) -> dict[str, Any] | None:
    for entry in (app.get("deployed_app_config") or {}).get("deployments") or []:
        if entry.get("name") == deployment_name and "ray_actor_options" in entry:
            return entry["ray_actor_options"]
    return (deployment.get("deployment_config") or {}).get("ray_actor_options")


def messages(app: dict[str, Any]) -> str:
    """The application's message and its deployments' messages, without repeats."""
    parts = [app.get("message") or ""]
    for deployment in (app.get("deployments") or {}).values():
        parts.append(deployment.get("message") or "")
    return "\n".join(dict.fromkeys(p.strip() for p in parts if p and p.strip()))


def timeout_error(name: str, timeout: float, progress: Progress) -> DeployTimeout:
    """The error for an application that did not reach RUNNING in time."""
    if progress.waiting_for_hardware:
        return DeployTimeout(
            f"'{name}' was still waiting for hardware after {timeout:g}s: "
            f"{progress.waiting_for_hardware}",
            hint="choose a smaller hardware profile or add nodes to the cluster; "
            "the cluster keeps trying to place it",
        )
    detail = f" ({progress.message})" if progress.message else ""
    return DeployTimeout(
        f"'{name}' was not running after {timeout:g}s; last status {progress.status}{detail}",
        hint="the cluster keeps trying; check again later or wait longer",
    )
