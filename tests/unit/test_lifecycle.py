"""Lifecycle rules over an in-memory cluster (pure logic; the real cluster is in integration/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gale_cli import lifecycle
from gale_cli.cluster import Applied
from gale_cli.errors import UsageError
from gale_cli.state import State
from serving.keys import match_key
from serving.spec import DeploymentSpec

SPEC = DeploymentSpec(name="demo", model="smollm2-135m-instruct", hardware="cpu")


class MemoryCluster:
    """Holds application configs as the Serve REST API would report them, all RUNNING."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.deployed_at: dict[str, float] = {}
        self.clock = 100.0

    def get_applications(self) -> dict[str, Any]:
        return {
            "applications": {
                name: {"status": "RUNNING", "deployed_app_config": app, "deployments": {}}
                for name, app in self.apps.items()
            }
        }

    def apply_application(self, app: dict[str, Any], *, create: bool = False) -> Applied:
        name = app["name"]
        if create and name in self.apps:
            raise UsageError(f"a deployment named '{name}' already exists")
        applied = Applied(name, self.apps.get(name), self.deployed_at.get(name))
        self.clock += 1
        self.apps[name], self.deployed_at[name] = app, self.clock
        return applied

    def modify_application(self, name: str, edit: Any, holds: Any = None) -> Applied:
        new = edit(self.apps.get(name))
        if new is None:
            return Applied(name, self.apps.pop(name, None), self.deployed_at.pop(name, None))
        return self.apply_application(new)

    def remove_application(self, name: str) -> bool:
        self.deployed_at.pop(name, None)
        return self.apps.pop(name, None) is not None

    def session_name(self) -> str | None:
        return None  # a cluster that does not say which session it is

    def wait_for_update(self, name: str, since: float | None, timeout: float) -> list[str]:
        return []

    def wait_for_removal(self, name: str, timeout: float) -> None:
        assert name not in self.apps


@pytest.fixture
def env(tmp_path: Path) -> tuple[MemoryCluster, State]:
    return MemoryCluster(), State(tmp_path / "state.db")


def live_keys(cluster: MemoryCluster, name: str) -> list[Any]:
    return lifecycle.live_deployments(cluster)[name].keys


def test_deploy_submits_with_one_key_and_records_a_revision(
    env: tuple[MemoryCluster, State],
) -> None:
    cluster, state = env
    key = lifecycle.deploy(cluster, state, SPEC)
    assert match_key(key, live_keys(cluster, "demo")) is not None
    assert key not in str(cluster.apps) and key not in str(state.all())
    assert [r.action for r in state.revisions("demo")] == ["deploy"]


def test_an_existing_name_suggests_redeploy(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    lifecycle.deploy(cluster, state, SPEC)
    with pytest.raises(UsageError) as info:
        lifecycle.deploy(cluster, state, SPEC)
    assert "gale redeploy demo" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("change", "kind"),
    [({}, "none"), ({"temperature": 0.0}, "in-place"), ({"hardware": "cpu-large"}, "rolling")],
)
def test_plan_redeploy_diff_and_kind(
    env: tuple[MemoryCluster, State], change: dict, kind: str
) -> None:
    cluster, state = env
    lifecycle.deploy(cluster, state, SPEC)
    plan = lifecycle.plan_redeploy(cluster, state, "demo", SPEC.model_copy(update=change))
    assert plan.kind == kind
    assert [f for f, _, _ in plan.diff] == list(change)


def test_redeploy_keeps_keys_and_endpoint(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    key = lifecycle.deploy(cluster, state, SPEC)
    plan = lifecycle.plan_redeploy(cluster, state, "demo", SPEC.model_copy(update={"top_k": 5}))
    deployed_at = cluster.deployed_at["demo"]
    # What the caller waits past: the deploy time of the version it replaced.
    assert lifecycle.redeploy(cluster, state, plan) == deployed_at
    assert cluster.apps["demo"]["route_prefix"] == "/demo"
    assert match_key(key, live_keys(cluster, "demo")) is not None
    assert [r.action for r in state.revisions("demo")] == ["deploy", "redeploy"]


def test_redeploy_cannot_rename(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    lifecycle.deploy(cluster, state, SPEC)
    with pytest.raises(UsageError):
        lifecycle.plan_redeploy(cluster, state, "demo", SPEC.model_copy(update={"name": "other"}))


def test_keys_create_and_revoke(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    first = lifecycle.deploy(cluster, state, SPEC)
    second, record = lifecycle.create_key(cluster, state, "demo", "ci")
    assert match_key(second, live_keys(cluster, "demo")) == record
    lifecycle.revoke_key(cluster, state, "demo", record.id)
    assert match_key(second, live_keys(cluster, "demo")) is None
    assert match_key(first, live_keys(cluster, "demo")) is not None
    with pytest.raises(UsageError):
        lifecycle.revoke_key(cluster, state, "demo", record.id)


def test_undeploy_keeps_config_and_keys_and_redeploy_brings_it_back(
    env: tuple[MemoryCluster, State],
) -> None:
    cluster, state = env
    key = lifecycle.deploy(cluster, state, SPEC)
    lifecycle.undeploy(cluster, state, "demo")
    assert "demo" not in cluster.apps
    assert lifecycle.find(cluster, state, "demo").status == "Undeployed"
    plan = lifecycle.plan_redeploy(cluster, state, "demo", SPEC)
    assert plan.kind == "start"
    lifecycle.redeploy(cluster, state, plan)
    assert match_key(key, live_keys(cluster, "demo")) is not None


def test_restore_resubmits_what_the_cluster_lost(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    key = lifecycle.deploy(cluster, state, SPEC)
    lifecycle.deploy(cluster, state, SPEC.model_copy(update={"name": "other"}))
    lifecycle.undeploy(cluster, state, "other")
    cluster.apps.clear()  # the cluster restarted from scratch
    assert lifecycle.find(cluster, state, "demo").status == "Not running"
    assert lifecycle.restore(cluster, state) == ["demo"]
    assert match_key(key, live_keys(cluster, "demo")) is not None
    assert "other" not in cluster.apps


def test_foreign_applications_are_not_listed(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    cluster.apps["theirs"] = {"name": "theirs", "import_path": "their.app:app"}
    lifecycle.deploy(cluster, state, SPEC)
    assert list(lifecycle.all_deployments(cluster, state)) == ["demo"]


def test_delete_removes_everything(env: tuple[MemoryCluster, State]) -> None:
    cluster, state = env
    lifecycle.deploy(cluster, state, SPEC)
    lifecycle.delete(cluster, state, "demo")
    assert cluster.apps == {} and state.get("demo") is None
    with pytest.raises(UsageError):
        lifecycle.find(cluster, state, "demo")
