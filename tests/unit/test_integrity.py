"""Two machines (two GALE_HOMEs) driving one cluster: the fake dashboard stands for it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gale_cli import lifecycle
from gale_cli.cluster import ClusterConfig, ServeClient
from gale_cli.errors import ClusterError, GaleError, UsageError
from gale_cli.state import State
from serving.keys import match_key, parse_duration
from serving.spec import DeploymentSpec
from tests.unit.test_cluster_client import TOKEN, FakeDashboard

SPEC = DeploymentSpec(name="demo", model="smollm2-135m-instruct", hardware="cpu")


class Machine:
    """One machine: its own GALE_HOME (lock and state) and a client of the shared cluster."""

    def __init__(self, fake: FakeDashboard, home: Path) -> None:
        config = ClusterConfig(gale_home=home, token=TOKEN, token_source="RAY_AUTH_TOKEN")
        self.client = ServeClient(config, transport=httpx.MockTransport(fake), verify_delay=0)
        self.state = State(home / "state.db")


@pytest.fixture
def fake() -> FakeDashboard:
    return FakeDashboard()


@pytest.fixture
def a(fake: FakeDashboard, tmp_path: Path) -> Machine:
    return Machine(fake, tmp_path / "a")


@pytest.fixture
def b(fake: FakeDashboard, tmp_path: Path) -> Machine:
    return Machine(fake, tmp_path / "b")


def live_keys(m: Machine, name: str = "demo") -> list:
    return lifecycle.live_deployments(m.client)[name].keys


def once(hook: Callable[[], object], after: int = 0) -> Callable[..., None]:
    """A fake-dashboard hook that runs once, on the call after the first `after` ones."""
    calls: list[bool] = []

    def run(*args: object) -> None:
        calls.append(True)
        if len(calls) == after + 1:
            hook()

    return run


def test_a_revoke_during_a_key_create_stays_revoked(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    k1 = lifecycle.deploy(a.client, a.state, SPEC)
    k1_id = live_keys(a)[0].id
    # B revokes k1 right after A has read the deployment to add a key.
    fake.on_get = once(lambda: lifecycle.revoke_key(b.client, b.state, "demo", k1_id), after=1)
    k2, _ = lifecycle.create_key(a.client, a.state, "demo", "ci")
    keys = live_keys(a)
    assert match_key(k1, keys) is None
    assert match_key(k2, keys) is not None


def test_a_write_reverted_by_another_machine_is_detected_and_redone(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    k1 = lifecycle.deploy(a.client, a.state, SPEC)
    k1_id = live_keys(a)[0].id
    stale = copy.deepcopy(fake.apps)
    # Another machine's PUT of what it read earlier lands right after B's revoke.
    fake.after_put = once(lambda: setattr(fake, "apps", copy.deepcopy(stale)))
    lifecycle.revoke_key(b.client, b.state, "demo", k1_id)
    assert match_key(k1, live_keys(a)) is None


def test_a_deployment_from_another_machine_is_not_replaced(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    key_a: list[str] = []
    # A deploys the name right after B checked it was free.
    fake.on_get = once(lambda: key_a.append(lifecycle.deploy(a.client, a.state, SPEC)), after=1)
    with pytest.raises(UsageError) as info:
        lifecycle.deploy(b.client, b.state, SPEC)
    assert "already exists" in info.value.message
    assert "gale redeploy demo" in (info.value.hint or "")
    assert match_key(key_a[0], live_keys(a)) is not None


def test_unnamed_keys_get_unique_names(a: Machine) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    _, first = lifecycle.create_key(a.client, a.state, "demo")
    _, second = lifecycle.create_key(a.client, a.state, "demo")
    names = [k.name for k in live_keys(a)]
    assert len(set(names)) == 3
    assert first.name != second.name


def test_restore_does_not_bring_back_a_key_revoked_elsewhere(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    k1 = lifecycle.deploy(a.client, a.state, SPEC)
    k2, r2 = lifecycle.create_key(a.client, a.state, "demo", "ci")
    lifecycle.revoke_key(b.client, b.state, "demo", r2.id)
    lifecycle.all_deployments(a.client, a.state)  # any command A runs afterwards
    fake.apps.clear()  # the cluster is lost
    fake.session = "session_2"
    assert lifecycle.restore(a.client, a.state) == ["demo"]
    assert match_key(k2, live_keys(a)) is None
    assert match_key(k1, live_keys(a)) is not None


def test_restore_does_not_resurrect_a_deployment_deleted_elsewhere(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    lifecycle.delete(b.client, b.state, "demo")
    assert lifecycle.restore(a.client, a.state) == []
    assert lifecycle.find(a.client, a.state, "demo").status == "Undeployed"
    assert "demo" not in fake.apps
    # Learnt once, it holds after a cluster loss too.
    fake.session = "session_2"
    assert lifecycle.restore(a.client, a.state) == []


def test_a_failed_recreate_keeps_the_deployment_for_restore(
    fake: FakeDashboard, a: Machine
) -> None:
    key = lifecycle.deploy(a.client, a.state, SPEC)
    change = lifecycle.plan_redeploy(
        a.client, a.state, "demo", SPEC.model_copy(update={"hardware": "cpu-large"})
    )
    # The removal goes through; submitting the new version fails.
    fake.fail_put = lambda body: any(app["name"] == "demo" for app in body["applications"])
    with pytest.raises(ClusterError):
        lifecycle.redeploy(a.client, a.state, change, recreate=True)
    assert "demo" not in fake.apps
    assert lifecycle.find(a.client, a.state, "demo").status == "Not running"
    fake.fail_put = None
    assert lifecycle.restore(a.client, a.state) == ["demo"]
    assert match_key(key, live_keys(a)) is not None
    assert lifecycle.live_deployments(a.client)["demo"].spec.hardware == "cpu-large"


def test_an_unreadable_application_is_shown_and_others_go_on(
    fake: FakeDashboard, a: Machine
) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    lifecycle.deploy(a.client, a.state, SPEC.model_copy(update={"name": "old"}))
    fake.apps["old"]["deployed_app_config"]["args"]["model"] = "removed-from-catalog"
    found = lifecycle.all_deployments(a.client, a.state)
    assert found["demo"].spec == SPEC
    assert found["old"].status == "Unreadable"
    assert "removed-from-catalog" in found["old"].message
    lifecycle.create_key(a.client, a.state, "demo", "ci")
    with pytest.raises(UsageError) as info:
        lifecycle.create_key(a.client, a.state, "old", "ci")
    assert "unreadable" in info.value.message


def test_a_key_with_an_expiry_stops_matching_and_is_dropped_later(a: Machine) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    key, record = lifecycle.create_key(a.client, a.state, "demo", "ci", expires_in=60)
    assert record.expires_at is not None
    stored = next(k for k in live_keys(a) if k.id == record.id)
    assert stored.expires_at == record.expires_at  # the replica gets the expiry
    assert match_key(key, [stored], now=record.expires_at - 1) == stored
    assert match_key(key, [stored], now=record.expires_at) is None
    # Expired records go at the next key change.
    expired = stored.model_copy(update={"expires_at": 1.0})
    lifecycle._change_keys(  # noqa: SLF001
        a.client,
        a.state,
        "demo",
        lambda keys: [expired if k.id == stored.id else k for k in keys],
        lambda keys: True,
    )
    lifecycle.create_key(a.client, a.state, "demo")
    assert record.id not in [k.id for k in live_keys(a)]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800), ("45s", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "12", "h", "1w", "-1d", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="30m, 12h, 7d"):
        parse_duration(text)


# -- doors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "env", "refused"),
    [
        ("http://ray.example:8265", {}, True),
        ("ray.example:8265", {}, True),
        ("http://ray.example:8265", {"GALE_INSECURE": "1"}, False),
        ("https://ray.example:8265", {}, False),
        ("http://127.0.0.1:8265", {}, False),
        ("http://localhost:8265", {}, False),
    ],
)
def test_plain_http_to_another_machine_needs_consent(
    tmp_path: Path, address: str, env: dict, refused: bool
) -> None:
    environ = {"GALE_HOME": str(tmp_path), "GALE_RAY_ADDRESS": address, **env}
    if refused:
        with pytest.raises(UsageError, match="in clear") as info:
            ClusterConfig.from_env(environ)
        assert "GALE_INSECURE=1" in (info.value.hint or "")
        assert info.value.exit_code == 2
    else:
        assert ClusterConfig.from_env(environ).dashboard_url.endswith(":8265")


@pytest.mark.parametrize("requires_token", [True, False])
def test_a_dashboard_that_answers_without_the_token_is_reported(
    fake: FakeDashboard, tmp_path: Path, requires_token: bool
) -> None:
    fake.requires_token = requires_token
    warnings: list[str] = []
    config = ClusterConfig(gale_home=tmp_path, token=TOKEN, token_source="RAY_AUTH_TOKEN")
    client = ServeClient(config, transport=httpx.MockTransport(fake), warn=warnings.append)
    client.get_applications()
    client.get_applications()
    assert len(warnings) == (0 if requires_token else 1)
    assert all("answers without a token" in w and TOKEN not in w for w in warnings)


def test_the_local_head_starts_with_a_minimal_environment(tmp_path: Path) -> None:
    from gale_cli import local_head

    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "PYTHONPATH": "/src",
        "LC_ALL": "C.UTF-8",
        "HF_HOME": "/cache/hf",
        "CUDA_VISIBLE_DEVICES": "0",
        "GALE_HOME": "/home/me/.gale",
        "RAY_DEDUP_LOGS": "0",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "HF_TOKEN": "hf_secret",
        "GALE_API_KEY": "gale-secret",
        "GITHUB_TOKEN": "gh",
        "DATABASE_URL": "postgres://",
        "MY_SETTING": "x",
    }
    config = ClusterConfig(gale_home=tmp_path)
    env = local_head._head_env(config, "t" * 64, environ, extra=["MY_SETTING", "HF_TOKEN"])  # noqa: SLF001
    for name in ("PATH", "HOME", "PYTHONPATH", "LC_ALL", "HF_HOME", "CUDA_VISIBLE_DEVICES"):
        assert env[name] == environ[name]
    assert env["GALE_HOME"] and env["RAY_DEDUP_LOGS"] == "0"
    assert env["MY_SETTING"] == "x" and env["HF_TOKEN"] == "hf_secret"  # named: passed
    for name in ("AWS_SECRET_ACCESS_KEY", "GALE_API_KEY", "GITHUB_TOKEN", "DATABASE_URL"):
        assert name not in env
    assert env["RAY_AUTH_MODE"] == "token"
    assert "HF_TOKEN" not in local_head._head_env(config, "t" * 64, environ)  # noqa: SLF001
    with pytest.raises(UsageError, match="NOT_SET"):
        local_head.head_environment(environ, ["NOT_SET"])


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("hf:org/model", False),
        ("hf:org/model@main", False),
        ("hf:org/model@v1.0", False),
        ("hf:org/model@" + "a" * 39, False),
        ("hf:org/model@" + "0123456789abcdef0123" * 2, True),
        ("/models/mine", True),  # local code: what is on disk is what runs
        ("smollm2-135m-instruct", True),  # packaged with gale, no hub code
    ],
)
def test_trust_remote_code_needs_a_pinned_commit(model: str, ok: bool) -> None:
    from pydantic import ValidationError

    fields = {"name": "x", "model": model, "hardware": "cpu", "trust_remote_code": True}
    if ok:
        assert DeploymentSpec.model_validate(fields).trust_remote_code
        return
    with pytest.raises(ValidationError, match="pinned") as info:
        DeploymentSpec.model_validate(fields)
    assert info.value.errors()[0]["loc"] == ("trust_remote_code",)
    assert "40-hex commit" in str(info.value)
    DeploymentSpec.model_validate({**fields, "trust_remote_code": False})  # fine without it


def _replicas(fake: FakeDashboard, status: str, states: list[str], deployed_at: float) -> None:
    app = fake.apps["demo"]
    app.update(status="RUNNING", last_deployed_time_s=deployed_at)
    app["deployments"] = {
        "GaleModel": {
            "status": status,
            "message": "replica failed to start" if status == "DEPLOY_FAILED" else "",
            "replicas": [
                {"replica_id": f"r{i}", "pid": 100 + i, "state": s} for i, s in enumerate(states)
            ],
        }
    }


def test_revoke_returns_once_every_replica_has_the_new_keys(
    fake: FakeDashboard, a: Machine
) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    _, record = lifecycle.create_key(a.client, a.state, "demo", "ci")
    _replicas(fake, "HEALTHY", ["RUNNING", "RUNNING"], deployed_at=100.0)
    steps = [
        ("UPDATING", ["RUNNING", "UPDATING"]),
        ("UPDATING", ["UPDATING", "RUNNING"]),
        ("HEALTHY", ["RUNNING", "RUNNING"]),
    ]
    polls: list[str] = []

    def rollout(n: int) -> None:
        if "demo" in fake.apps and fake.apps["demo"]["status"] != "RUNNING" or polls:
            status, states = steps[min(len(polls), len(steps) - 1)]
            polls.append(status)
            _replicas(fake, status, states, deployed_at=200.0)

    fake.on_get = rollout
    lifecycle.revoke_key(a.client, a.state, "demo", record.id, confirm_within=10)
    assert polls[-1] == "HEALTHY" and "UPDATING" in polls


def test_revoke_names_the_replicas_that_may_still_accept_the_key(
    fake: FakeDashboard, a: Machine
) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    _, record = lifecycle.create_key(a.client, a.state, "demo", "ci")

    def stuck(n: int) -> None:
        _replicas(fake, "DEPLOY_FAILED", ["RUNNING", "STARTING"], deployed_at=200.0)

    fake.on_get = stuck
    with pytest.raises(GaleError) as info:
        lifecycle.revoke_key(a.client, a.state, "demo", record.id, confirm_within=0.2)
    text = info.value.message
    assert "replica r0 (pid 100, RUNNING) may still have the old keys" in text
    assert "DEPLOY_FAILED: replica failed to start" in text
    assert record.id not in [k.id for k in live_keys(a)]  # revoked on the cluster all the same


def test_a_retried_key_create_makes_one_key(fake: FakeDashboard, a: Machine, b: Machine) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    stale = copy.deepcopy(fake.apps)
    # A stale PUT from elsewhere reverts A's first write: A writes the same key again.
    fake.after_put = once(lambda: setattr(fake, "apps", copy.deepcopy(stale)))
    key, record = lifecycle.create_key(a.client, a.state, "demo")
    keys = live_keys(a)
    assert len(keys) == 2 and match_key(key, keys) == record


def test_a_later_change_from_elsewhere_is_not_taken_for_a_revert(
    fake: FakeDashboard, a: Machine, b: Machine
) -> None:
    lifecycle.deploy(a.client, a.state, SPEC)
    _, record = lifecycle.create_key(a.client, a.state, "demo", "ci")
    # Right after B's revoke lands, A adds a key on top of it (A read after B wrote).
    made: list[str] = []
    fake.after_put = once(lambda: made.append(lifecycle.create_key(a.client, a.state, "demo")[0]))
    lifecycle.revoke_key(b.client, b.state, "demo", record.id)
    keys = live_keys(a)
    assert record.id not in [k.id for k in keys]
    assert match_key(made[0], keys) is not None


@pytest.mark.parametrize("value", ["1w", "soon", "0d"])
def test_keys_create_with_a_bad_expiry_exits_2_before_touching_the_cluster(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from gale_cli.main import main

    monkeypatch.setenv("GALE_RAY_ADDRESS", "http://127.0.0.1:9")  # nothing answers there
    code = main(["keys", "create", "demo", "--expires-in", value])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "--expires-in" in captured.err and "30m, 12h, 7d" in captured.err


def test_a_remote_plain_http_address_exits_2_from_the_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gale_cli.main import main

    monkeypatch.setenv("GALE_RAY_ADDRESS", "http://ray.example:8265")
    monkeypatch.delenv("GALE_INSECURE", raising=False)
    code = main(["list"])
    captured = capsys.readouterr()
    assert code == 2 and "in clear" in captured.err and "GALE_INSECURE=1" in captured.err


def test_an_application_gale_did_not_deploy_can_be_removed_not_replaced(
    fake: FakeDashboard, a: Machine
) -> None:
    from tests.unit.test_cluster_client import FOREIGN, gale_app, live

    fake.apps["other"] = live(FOREIGN)
    with pytest.raises(ClusterError, match="did not deploy"):
        a.client.apply_application({**gale_app(), "name": "other"})
    assert a.client.remove_application("other") is True
    assert "other" not in fake.apps
