"""What happens to a deployment: deploy, redeploy, keys, undeploy, delete, restore.

The cluster is the source of truth for what runs; local state keeps history and
what the cluster cannot (undeployed specs and their key records). Commands call
these functions and render what they return.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from gale_cli.errors import GaleError, UsageError
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

if TYPE_CHECKING:
    from gale_cli.cluster import Applied

STATUS_WORDS = {
    "RUNNING": "Deployed",
    "DEPLOYING": "Deploying",
    "NOT_STARTED": "Deploying",
    "DEPLOY_FAILED": "Failed",
    "UNHEALTHY": "Unhealthy",
    "DELETING": "Undeploying",
}
UNREADABLE = "Unreadable"


class Cluster(Protocol):
    """What lifecycle needs of the cluster client (gale_cli.cluster.ServeClient)."""

    def get_applications(self) -> dict[str, Any]: ...

    def apply_application(self, app: dict[str, Any], *, create: bool = False) -> Applied: ...

    def modify_application(
        self,
        name: str,
        edit: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        holds: Callable[[dict[str, Any] | None], bool] | None = None,
    ) -> Applied: ...

    def remove_application(self, name: str) -> bool: ...

    def session_name(self) -> str | None: ...

    def wait_for_update(self, name: str, since: float | None, timeout: float) -> list[str]: ...

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
        deployment = app.get("deployments", {}).get(DEPLOYMENT_NAME, {})
        try:
            spec, keys = from_serve_application(config)
        except (ValidationError, KeyError, IndexError, TypeError) as exc:
            # One config gale can no longer read (an old spec, a model gone from the
            # catalog) must not stop every command: show it, with the reason.
            found[name] = Live(
                spec=_placeholder(name, config),
                keys=[],
                status=UNREADABLE,
                message=f"gale cannot read its config: {_reason(exc)}",
                created_at=app.get("last_deployed_time_s"),
            )
            continue
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


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc)


def _placeholder(name: str, config: dict[str, Any]) -> DeploymentSpec:
    """A stand-in spec for an unreadable application: its name, model and hardware as written."""
    args = config.get("args")
    args = args if isinstance(args, dict) else {}
    return DeploymentSpec.model_construct(
        name=name, model=str(args.get("model", "?")), hardware=str(args.get("hardware", "?"))
    )


def readable(config: dict[str, Any] | None, name: str) -> tuple[DeploymentSpec, list[KeyRecord]]:
    """Spec and keys of a live config; a UsageError naming the reason when gale cannot read it."""
    if config is None:
        raise UsageError(
            f"'{name}' is no longer on the cluster", hint="`gale list` shows deployments"
        )
    try:
        return from_serve_application(config)
    except (ValidationError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(
            f"'{name}' is unreadable: {_reason(exc)}",
            hint=f"`gale redeploy {name} --file SPEC` replaces it with a valid spec",
        ) from None


def all_deployments(cluster: Cluster, state: State) -> dict[str, Live]:
    """Live deployments plus what local state knows that is not running.

    Local state follows the cluster here: live key lists replace the local ones (so
    a key revoked from another machine is not restored by this one), and a
    deployment this machine saw on this same cluster that is gone now was removed
    from elsewhere: it is marked undeployed, so `gale restore` does not bring it back.
    """
    live = live_deployments(cluster)
    session = cluster.session_name()
    for record in state.all():
        name = record.spec.name
        if name in live:
            live[name].created_at = record.created_at
            if live[name].status != UNREADABLE:
                _follow(state, name, live[name].keys, record.keys, session)
            continue
        if record.deployed and session is not None and state.seen_in(name) == session:
            state.save(record.spec, record.keys, deployed=False, action="removed elsewhere")
            state.forget_seen(name)
            record = state.get(name) or record
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


def _follow(
    state: State, name: str, live: list[KeyRecord], local: list[KeyRecord], session: str | None
) -> None:
    # Written only when something changed: a read command leaves local state as it was.
    if live != local:
        state.set_keys(name, live)
    if session is not None and state.seen_in(name) != session:
        state.mark_seen(name, session)


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
    # Create-only, checked inside the lock against the live config: of two deploys
    # of one name (from two machines), the second is refused, never a replacement.
    cluster.apply_application(to_serve_application(spec, [record]), create=True)
    state.save(spec, [record], deployed=True, action="deploy")
    _mark_seen(cluster, state, spec.name)
    return key


def _mark_seen(cluster: Cluster, state: State, name: str) -> None:
    session = cluster.session_name()
    if session is not None and state.seen_in(name) != session:
        state.mark_seen(name, session)


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
    if current.status == UNREADABLE:
        # Nothing to keep from it but its keys, which gale cannot read either.
        raise UsageError(
            f"'{name}' is unreadable: {current.message}",
            hint=f"`gale delete {name}` removes it; then deploy it again",
        )
    # Recorded before anything is removed: if the new version fails to start, or
    # the command dies between removal and submission, `gale restore` brings it back.
    state.save(change.new, current.keys, deployed=True, action="redeploy")
    if recreate and current.deployed:
        state.forget_seen(name)  # its absence now is this command's doing
        cluster.remove_application(name)
        cluster.wait_for_removal(name, timeout=120)

    def edit(live: dict[str, Any] | None) -> dict[str, Any]:
        # Keys as the cluster has them at the moment of writing, not as first read.
        keys = readable(live, name)[1] if live is not None else current.keys
        return to_serve_application(change.new, keys)

    def holds(live: dict[str, Any] | None) -> bool:
        return live is not None and readable(live, name)[0] == change.new

    applied = cluster.modify_application(name, edit, holds)
    _mark_seen(cluster, state, name)
    return applied.previous_deploy_time


def _change_keys(
    cluster: Cluster,
    state: State,
    name: str,
    change: Callable[[list[KeyRecord]], list[KeyRecord]],
    holds: Callable[[list[KeyRecord]], bool],
    confirm_within: float | None = None,
) -> list[KeyRecord]:
    """Change a deployment's keys from the live config inside the lock; return the new list.

    With `confirm_within` (seconds), return only once every replica runs the new list.
    """
    current = find(cluster, state, name)
    if current.status == UNREADABLE:
        raise UsageError(f"'{name}' is unreadable: {current.message}")
    if not current.deployed:
        keys = change(current.keys)
        state.set_keys(name, keys)
        return keys
    result: list[list[KeyRecord]] = []

    def edit(live: dict[str, Any] | None) -> dict[str, Any]:
        spec, keys = readable(live, name)
        result.append(change(keys))
        return to_serve_application(spec, result[-1])

    def still(live: dict[str, Any] | None) -> bool:
        return live is not None and holds(readable(live, name)[1])

    applied = cluster.modify_application(name, edit, still)
    if state.get(name) is None:
        state.save(current.spec, result[-1], deployed=True, action="adopt")
    else:
        state.set_keys(name, result[-1])
    _mark_seen(cluster, state, name)
    if confirm_within is not None:
        since = applied.previous_deploy_time
        lagging = cluster.wait_for_update(name, since, confirm_within)
        if lagging:
            raise GaleError(
                f"the key change to '{name}' is on the cluster, but not every replica has "
                f"confirmed it after {confirm_within:g}s:\n  " + "\n  ".join(lagging),
                hint=f"`gale status {name}` shows the replicas; run the command again to re-check",
            )
    return result[-1]


def create_key(
    cluster: Cluster,
    state: State,
    name: str,
    key_name: str | None = None,
    *,
    expires_in: float | None = None,
    limits: dict[str, int | None] | None = None,
) -> tuple[str, KeyRecord]:
    """A new key for a deployment; return the key (shown once) and its record.

    Without `key_name` the key is named `key-<6 hex>`, unique among its keys. With
    `expires_in` (seconds) replicas refuse it once that time has passed; expired
    records are dropped at the next key change.
    """
    made: list[tuple[str, KeyRecord]] = []

    def add(keys: list[KeyRecord]) -> list[KeyRecord]:
        keys = [k for k in keys if not k.expired()]
        taken = {k.name for k in keys}
        if made:  # a retry: the same key, never a second one
            record = made[0][1]
            if any(k.id == record.id for k in keys):
                return keys
            if record.name in taken:
                raise UsageError(f"'{name}' got another key named '{record.name}' meanwhile")
            return [*keys, record]
        if key_name is not None and key_name in taken:
            raise UsageError(
                f"'{name}' already has a key named '{key_name}'", hint="choose another --key-name"
            )
        label = key_name
        while label is None or label in taken:
            label = f"key-{secrets.token_hex(3)}"
        key, record = generate_key(label, expires_in)
        made.append((key, record.model_copy(update=limits or {})))
        return [*keys, made[0][1]]

    _change_keys(cluster, state, name, add, lambda keys: made[0][1] in keys)
    return made[0]


def revoke_key(
    cluster: Cluster,
    state: State,
    name: str,
    key_id: str,
    *,
    confirm_within: float | None = None,
) -> KeyRecord:
    """Revoke one key by id; it stops working within seconds.

    With `confirm_within`, wait until every replica refuses it; a GaleError names the
    replicas that may still accept it, and why, if they do not within that time.
    """
    revoked: list[KeyRecord] = []

    def remove(keys: list[KeyRecord]) -> list[KeyRecord]:
        kept = [k for k in keys if k.id != key_id]
        if len(kept) == len(keys) and revoked:
            return kept  # gone already (a retry, or revoked elsewhere meanwhile)
        if len(kept) == len(keys):
            raise UsageError(
                f"'{name}' has no key with id '{key_id}'", hint=f"`gale keys list {name}`"
            )
        revoked.append(next(k for k in keys if k.id == key_id))
        return [k for k in kept if not k.expired()]

    gone = lambda keys: all(k.id != key_id for k in keys)  # noqa: E731
    _change_keys(cluster, state, name, remove, gone, confirm_within)
    return revoked[-1]


def update_key(
    cluster: Cluster, state: State, name: str, key_id: str, limits: dict[str, int | None]
) -> KeyRecord:
    """Change a key's own limits (None: clear one) from the live config; return its new record."""
    updated: list[KeyRecord] = []

    def change(keys: list[KeyRecord]) -> list[KeyRecord]:
        found = next((k for k in keys if k.id == key_id), None)
        if found is None:
            raise UsageError(
                f"'{name}' has no key with id '{key_id}'", hint=f"`gale keys list {name}`"
            )
        # Validated as a record is: a limit must be a whole number of at least 1.
        record = KeyRecord.model_validate({**found.model_dump(), **limits})
        updated.append(record)
        return [record if k.id == key_id else k for k in keys]

    _change_keys(cluster, state, name, change, lambda keys: updated[-1] in keys)
    return updated[-1]


def undeploy(cluster: Cluster, state: State, name: str) -> None:
    """Free the replicas; configuration and keys stay in local state."""
    current = find(cluster, state, name)
    if current.status == UNREADABLE:
        raise UsageError(
            f"'{name}' is unreadable: {current.message}",
            hint=f"`gale delete {name}` removes it",
        )
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
    state.forget_seen(name)


def restore(cluster: Cluster, state: State) -> list[str]:
    """Resubmit every deployment local state says should run but the cluster lacks.

    What another machine revoked or removed while this one looked on is already in
    local state (`all_deployments` follows the cluster); a deployment missing from
    the same cluster this machine last saw it on was removed, not lost, and stays down.
    """
    known = all_deployments(cluster, state)
    restored = []
    for record in state.all():
        name = record.spec.name
        if record.deployed and not known[name].deployed:
            cluster.apply_application(to_serve_application(record.spec, record.keys), create=True)
            _mark_seen(cluster, state, name)
            restored.append(name)
    return restored
