"""Local state: transactions, revisions, keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gale_cli.session import open_session
from gale_cli.state import State
from serving.keys import generate_key
from serving.spec import DeploymentSpec

SPEC = DeploymentSpec(name="demo", model="smollm2-135m-instruct", hardware="cpu")


def test_save_get_and_revisions(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    _, key = generate_key()
    assert state.save(SPEC, [key], deployed=True, action="deploy") == 1
    changed = SPEC.model_copy(update={"temperature": 0.1})
    assert state.save(changed, [key], deployed=True, action="redeploy") == 2
    record = state.get("demo")
    assert (
        record is not None and record.spec == changed and record.keys == [key] and record.deployed
    )
    assert [(r.revision, r.action, r.spec.temperature) for r in state.revisions("demo")] == [
        (1, "deploy", 0.7),
        (2, "redeploy", 0.1),
    ]


def test_keys_change_without_a_revision_and_undeploy_with_one(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    state.save(SPEC, [], deployed=True, action="deploy")
    _, key = generate_key("ci")
    state.set_keys("demo", [key])
    record = state.get("demo")
    assert record is not None and record.keys == [key] and record.deployed
    assert len(state.revisions("demo")) == 1
    # How `gale undeploy` records it (lifecycle.undeploy): the flag, the keys kept.
    state.save(SPEC, [key], deployed=False, action="undeploy")
    record = state.get("demo")
    assert record is not None and record.keys == [key] and not record.deployed
    assert [r.action for r in state.revisions("demo")] == ["deploy", "undeploy"]


def test_a_failed_transaction_leaves_nothing_half_written(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    state.save(SPEC, [], deployed=True, action="deploy")
    with pytest.raises(ZeroDivisionError), state._connect() as db:
        db.execute("DELETE FROM deployments")
        raise ZeroDivisionError
    assert state.get("demo") is not None


def test_delete_forgets_history(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    state.save(SPEC, [], deployed=True, action="deploy")
    state.delete("demo")
    assert state.get("demo") is None and state.revisions("demo") == [] and state.all() == []


def test_state_lives_under_gale_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALE_HOME", str(tmp_path / "home"))
    session = open_session()  # a command's session: no cluster is contacted
    session.client.close()
    assert session.state.path == tmp_path / "home" / "state.db"


def test_state_and_lock_files_are_private_in_an_existing_home(tmp_path: Path) -> None:
    from tests.unit.test_cluster_client import FakeDashboard, client_for, gale_app

    tmp_path.chmod(0o755)  # a GALE_HOME made earlier, readable by others
    State(tmp_path / "state.db")
    client_for(FakeDashboard(), tmp_path).apply_application(gale_app())
    for name in ("state.db", "serve-config.lock"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
