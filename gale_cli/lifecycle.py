"""What happens to a deployment: deploy, redeploy, keys, undeploy, delete, restore.

The cluster is the source of truth for what runs; local state keeps history and
what the cluster cannot (undeployed specs and their key records). Commands call
these functions and render what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gale_cli.errors import UsageError
from gale_cli.state import State
from serving.keys import KeyRecord, generate_key
from serving.serve_config import (
    DEPLOYMENT_NAME,
    change_kind,
    from_serve_application,
    is_gale_application,
    route_prefix,
    to_serve_application,
)
from serving.spec import DeploymentSpec

STATUS_WORDS = {
    "RUNNING": "Deployed",
    "DEPLOYING": "Deploying",
    "NOT_STARTED": "Deploying",
    "DEPLOY_FAILED": "Failed",
    "UNHEALTHY": "Unhealthy",
    "DELETING": "Undeploying",
}


class Cluster(Protocol):
    """What lifecycle needs of the cluster client (gale_cli.cluster.ServeClient)."""

    def get_applications(self) -> dict[str, Any]: ...

    def apply_application(self, app: dict[str, Any]) -> Any: ...

    def remove_application(self, name: str) -> bool: ...

    def wait_for_removal(self, name: str, timeout: float) -> None: ...


@dataclass
class Live:
    """A deployment as the cluster reports it now (None fields when it is not running)."""

    spec: DeploymentSpec
    keys: list[KeyRecord]
    status: str
    message: str = ""
    replicas_running: int = 0
    replica_pids: list[int] = field(default_factory=list)
    deployed: bool = True
    created_at: float | None = None


def endpoint(serve_url: str, name: str) -> str:
    """The OpenAI base URL of a deployment (ends in /v1)."""
    return serve_url.rstrip("/") + route_prefix(name) + "/v1"


def live_deployments(cluster: Cluster) -> dict[str, Live]:
    """Every gale application on the cluster, rebuilt from its live config."""
    found: dict[str, Live] = {}
    for name, app in cluster.get_applications().get("applications", {}).items():
        config = app.get("deployed_app_config") or {}
        if not is_gale_application(config):
            continue
        spec, keys = from_serve_application(config)
        deployment = app.get("deployments", {}).get(DEPLOYMENT_NAME, {})
        replicas = [r for r in deployment.get("replicas", []) if r.get("state") == "RUNNING"]
        found[name] = Live(
            spec=spec,
            keys=keys,
            status=STATUS_WORDS.get(app.get("status", ""), app.get("status", "Unknown")),
            message=app.get("message") or deployment.get("message", ""),
            replicas_running=len(replicas),
            replica_pids=sorted(int(r["pid"]) for r in replicas if r.get("pid")),
            created_at=app.get("last_deployed_time_s"),
        )
    return found


def all_deployments(cluster: Cluster, state: State) -> dict[str, Live]:
    """Live deployments plus what local state knows that is not running."""
    live = live_deployments(cluster)
    for record in state.all():
        name = record.spec.name
        if name in live:
            live[name].created_at = record.created_at
            continue
        live[name] = Live(
            spec=record.spec,
            keys=record.keys,
            status="Not running" if record.deployed else "Undeployed",
            message="the cluster does not have it; `gale restore` brings it back"
            if record.deployed
            else "",
            deployed=False,
            created_at=record.created_at,
        )
    return dict(sorted(live.items()))


def find(cluster: Cluster, state: State, name: str) -> Live:
    """One deployment, live or from local state; UsageError if unknown."""
    found = all_deployments(cluster, state).get(name)
    if found is None:
        raise UsageError(f"no deployment named '{name}'", hint="`gale list` shows deployments")
    return found


def deploy(cluster: Cluster, state: State, spec: DeploymentSpec, key_name: str = "default") -> str:
    """Submit a new deployment with one fresh API key; return the key (shown once)."""
    existing = all_deployments(cluster, state).get(spec.name)
    if existing is not None:
        raise UsageError(
            f"a deployment named '{spec.name}' already exists ({existing.status.lower()})",
            hint=f"change it with `gale redeploy {spec.name}`, or choose another --name",
        )
    key, record = generate_key(key_name)
    cluster.apply_application(to_serve_application(spec, [record]))
    state.save(spec, [record], deployed=True, action="deploy")
    return key


@dataclass(frozen=True)
class Change:
    """What a redeploy will do."""

    old: DeploymentSpec
    new: DeploymentSpec
    diff: list[tuple[str, Any, Any]]
    kind: str  # "in-place", "rolling", "start" (it was not running) or "none"


def plan_redeploy(cluster: Cluster, state: State, name: str, new: DeploymentSpec) -> Change:
    """Compare the deployment as it is with `new`."""
    current = find(cluster, state, name)
    if new.name != name:
        raise UsageError(
            f"redeploy keeps the name: the spec says '{new.name}', the deployment is '{name}'",
            hint="a new name is a new deployment: use `gale deploy`",
        )
    old = current.spec
    diff = [
        (f, getattr(old, f), getattr(new, f))
        for f in DeploymentSpec.model_fields
        if getattr(old, f) != getattr(new, f)
    ]
    if not current.deployed:
        kind = "start"
    elif not diff:
        kind = "none"
    else:
        kind = change_kind(old, new)
    return Change(old, new, diff, kind)


def redeploy(
    cluster: Cluster, state: State, change: Change, *, recreate: bool = False
) -> float | None:
    """Apply a planned change (keys and endpoint stay); return the replaced version's deploy time."""
    name = change.new.name
    current = find(cluster, state, name)
    if recreate and current.deployed:
        cluster.remove_application(name)
        cluster.wait_for_removal(name, timeout=120)
    applied = cluster.apply_application(to_serve_application(change.new, current.keys))
    state.save(change.new, current.keys, deployed=True, action="redeploy")
    return applied.previous_deploy_time


def set_keys(cluster: Cluster, state: State, name: str, keys: list[KeyRecord]) -> None:
    """Replace a deployment's key records: in place on the cluster, and in local state."""
    current = find(cluster, state, name)
    if current.deployed:
        cluster.apply_application(to_serve_application(current.spec, keys))
    if state.get(name) is None:
        state.save(current.spec, keys, deployed=current.deployed, action="adopt")
    else:
        state.set_keys(name, keys)


def create_key(cluster: Cluster, state: State, name: str, key_name: str) -> tuple[str, KeyRecord]:
    """A new key for a deployment; return the key (shown once) and its record."""
    current = find(cluster, state, name)
    if any(k.name == key_name for k in current.keys):
        raise UsageError(
            f"'{name}' already has a key named '{key_name}'", hint="choose another --key-name"
        )
    key, record = generate_key(key_name)
    set_keys(cluster, state, name, [*current.keys, record])
    return key, record


def revoke_key(cluster: Cluster, state: State, name: str, key_id: str) -> KeyRecord:
    """Revoke one key by id; it stops working within seconds."""
    current = find(cluster, state, name)
    kept = [k for k in current.keys if k.id != key_id]
    if len(kept) == len(current.keys):
        raise UsageError(f"'{name}' has no key with id '{key_id}'", hint=f"`gale keys list {name}`")
    set_keys(cluster, state, name, kept)
    return next(k for k in current.keys if k.id == key_id)


def undeploy(cluster: Cluster, state: State, name: str) -> None:
    """Free the replicas; configuration and keys stay in local state."""
    current = find(cluster, state, name)
    if not current.deployed and current.status == "Undeployed":
        raise UsageError(
            f"'{name}' is already undeployed", hint=f"`gale redeploy {name}` brings it back"
        )
    # Save the live config: it may be newer than local state (deployed from another machine).
    state.save(current.spec, current.keys, deployed=False, action="undeploy")
    if current.deployed:
        cluster.remove_application(name)


def delete(cluster: Cluster, state: State, name: str) -> None:
    """Remove a deployment everywhere: cluster, history, keys."""
    current = find(cluster, state, name)
    if current.deployed:
        cluster.remove_application(name)
    state.delete(name)


def restore(cluster: Cluster, state: State) -> list[str]:
    """Resubmit every deployment local state says should run but the cluster lacks."""
    live = live_deployments(cluster)
    restored = []
    for record in state.all():
        if record.deployed and record.spec.name not in live:
            cluster.apply_application(to_serve_application(record.spec, record.keys))
            restored.append(record.spec.name)
    return restored
