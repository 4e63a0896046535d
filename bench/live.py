"""A live deployment under measurement: its spec, replicas and health, changed as gale would."""

from __future__ import annotations

from typing import Any

import httpx

from devstack import eventually
from gale_cli.cluster import Applied, ServeClient
from serving.keys import KeyRecord
from serving.serve_config import from_serve_application, model_status, to_serve_application
from serving.spec import DeploymentSpec


def live_spec(client: ServeClient, name: str) -> tuple[DeploymentSpec, list[KeyRecord]]:
    """The spec and key records of a deployment, rebuilt from the cluster's live config."""
    app = client.get_application(name)
    if app is None or not app.get("deployed_app_config"):
        raise RuntimeError(f"'{name}' is not on the cluster")
    return from_serve_application(app["deployed_app_config"])


def update_live(
    client: ServeClient, name: str, keys: list[KeyRecord] | None = None, **changes: Any
) -> Applied:
    """Change fields of a live deployment (and optionally its keys) as `gale redeploy` would."""
    spec, live_keys = live_spec(client, name)
    new = DeploymentSpec.model_validate({**spec.model_dump(), **changes})
    return client.apply_application(to_serve_application(new, live_keys if keys is None else keys))


def replicas(client: ServeClient, name: str) -> list[dict[str, Any]]:
    """The replicas of a deployment's one Serve deployment (state, pid, ...)."""
    app = client.get_application(name) or {}
    return list(model_status(app).get("replicas", []))


def running_pids(client: ServeClient, name: str) -> set[int]:
    """Process ids of the RUNNING replicas."""
    return {r["pid"] for r in replicas(client, name) if r.get("state") == "RUNNING"}


def target_replicas(client: ServeClient, name: str) -> int | None:
    """How many replicas the autoscaler wants now."""
    app = client.get_application(name) or {}
    for deployment in app.get("deployments", {}).values():
        return deployment.get("target_num_replicas")
    return None


def health(serve_url: str, name: str) -> dict[str, Any] | None:
    """The deployment's /health answer, or None when it does not answer 200."""
    try:
        response = httpx.get(f"{serve_url}/{name}/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def settle(client: ServeClient, name: str, replicas_wanted: int, timeout: float = 300) -> None:
    """Wait until the app is RUNNING with exactly `replicas_wanted` replicas, all RUNNING."""

    def settled() -> bool:
        app = client.get_application(name) or {}
        states = [r.get("state") for r in replicas(client, name)]
        return (
            app.get("status") == "RUNNING"
            and len(states) == replicas_wanted
            and all(s == "RUNNING" for s in states)
        )

    eventually(settled, timeout, f"'{name}' settled at {replicas_wanted} replicas", 0.25)
