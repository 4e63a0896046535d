"""ServeClient against a fake dashboard (httpx.MockTransport): merge, auth, errors, polling."""

from __future__ import annotations

import copy
import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gale_cli import local_head, placement
from gale_cli.cluster import ServeClient
from gale_cli.commands.waiting import describe_progress
from gale_cli.connection import ClusterConfig
from gale_cli.errors import (
    AuthError,
    ClusterError,
    ClusterUnreachable,
    DeployFailed,
    DeployTimeout,
    UsageError,
)
from gale_cli.progress import Progress
from serving.catalog import GIB
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec

TOKEN = "0123456789abcdef" * 4


def gale_app(name: str = "chat", hardware: str = "cpu", temperature: float = 0.7) -> dict:
    spec = DeploymentSpec(
        name=name, model="smollm2-135m-instruct", hardware=hardware, temperature=temperature
    )
    return to_serve_application(spec)


FOREIGN = {"name": "other", "route_prefix": "/other", "import_path": "team.app:app"}


def live(config: dict, status: str = "RUNNING", source: str = "declarative", **extra: Any) -> dict:
    """An application as GET /api/serve/applications/ shows it."""
    return {
        "name": config["name"],
        "status": status,
        "message": "",
        "last_deployed_time_s": 100.0,
        "source": source,
        "deployed_app_config": config if source == "declarative" else None,
        "deployments": {},
        **extra,
    }


class FakeDashboard:
    """Just enough of Ray's dashboard: Serve's GET/PUT and the State API's nodes."""

    def __init__(self, apps: dict[str, dict] | None = None, nodes: list | None = None) -> None:
        self.apps = apps or {}
        self.nodes = nodes if nodes is not None else [{"CPU": 8.0, "memory": 16.0 * GIB}]
        self.puts: list[dict] = []
        self.requests: list[httpx.Request] = []
        self.on_get: Callable[[int], None] | None = None
        self.gets = 0
        self.status_override: int | None = None
        self.after_put: Callable[[], None] | None = None
        self.fail_put: Callable[[dict], bool] | None = None
        self.session = "session_1"
        self.requires_token = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status_override:
            return httpx.Response(self.status_override, text="no")
        if self.requires_token and request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, text="token required")
        if request.url.path == "/api/serve/applications/" and request.method == "GET":
            self.gets += 1
            if self.on_get:
                self.on_get(self.gets)
            return httpx.Response(200, json={"applications": copy.deepcopy(self.apps)})
        if request.url.path == "/api/serve/applications/" and request.method == "PUT":
            body = json.loads(request.content)
            if self.fail_put and self.fail_put(body):
                return httpx.Response(500, text="the controller failed")
            self.puts.append(body)
            kept = {n: a for n, a in self.apps.items() if a["source"] == "imperative"}
            self.apps = kept | {c["name"]: live(c, "DEPLOYING") for c in body["applications"]}
            if self.after_put:
                self.after_put()
            return httpx.Response(200)
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"ray_version": "2.60.0", "session_name": self.session})
        if request.url.path == "/api/v0/nodes":
            rows = [{"state": "ALIVE", "resources_total": n} for n in self.nodes]
            return httpx.Response(200, json={"data": {"result": {"result": rows}}})
        return httpx.Response(404)


def client_for(
    fake: Callable[[httpx.Request], httpx.Response],
    tmp_path: Path,
    url: str = "http://127.0.0.1:8265",
) -> ServeClient:
    config = ClusterConfig(
        dashboard_url=url, gale_home=tmp_path, token=TOKEN, token_source="RAY_AUTH_TOKEN"
    )
    return ServeClient(config, transport=httpx.MockTransport(fake))


# -- read, merge, write ---------------------------------------------------------


def test_apply_keeps_foreign_apps_and_binds_serve_to_loopback(tmp_path: Path) -> None:
    fake = FakeDashboard({"other": live(FOREIGN)})
    applied = client_for(fake, tmp_path).apply_application(gale_app())
    (put,) = fake.puts
    assert [a["name"] for a in put["applications"]] == ["other", "chat"]
    assert put["applications"][0] == FOREIGN
    assert put["http_options"] == {"host": "127.0.0.1", "port": 8000}
    assert applied.previous is None
    assert (tmp_path / "serve-config.lock").exists()


def test_apply_replaces_only_its_own_app(tmp_path: Path) -> None:
    old = gale_app(temperature=0.7)
    fake = FakeDashboard({"chat": live(old), "other": live(FOREIGN)})
    new = gale_app(temperature=0.1)
    applied = client_for(fake, tmp_path).apply_application(new)
    (put,) = fake.puts
    assert sorted(put["applications"], key=lambda a: a["name"]) == [new, FOREIGN]
    assert applied.previous == old
    assert applied.previous_deploy_time == 100.0


def test_apply_refuses_to_replace_an_app_gale_did_not_deploy(tmp_path: Path) -> None:
    fake = FakeDashboard({"chat": live({**FOREIGN, "name": "chat"})})
    with pytest.raises(ClusterError, match="gale\\s+did not deploy"):
        client_for(fake, tmp_path).apply_application(gale_app())
    assert fake.puts == []


def test_imperative_apps_are_neither_sent_nor_replaced(tmp_path: Path) -> None:
    fake = FakeDashboard({"run": live({"name": "run"}, source="imperative")})
    client = client_for(fake, tmp_path)
    client.apply_application(gale_app())
    assert [a["name"] for a in fake.puts[0]["applications"]] == ["chat"]
    with pytest.raises(ClusterError, match="serve.run"):
        client.apply_application(gale_app("run"))


def test_apps_being_deleted_are_not_resurrected(tmp_path: Path) -> None:
    fake = FakeDashboard({"gone": live({**FOREIGN, "name": "gone"}, status="DELETING")})
    client_for(fake, tmp_path).apply_application(gale_app())
    assert [a["name"] for a in fake.puts[0]["applications"]] == ["chat"]


def test_remove_keeps_the_others(tmp_path: Path) -> None:
    fake = FakeDashboard({"chat": live(gale_app()), "other": live(FOREIGN)})
    client = client_for(fake, tmp_path)
    assert client.remove_application("chat") is True
    assert fake.puts[-1]["applications"] == [FOREIGN]
    assert client.remove_application("chat") is False
    assert fake.puts[-1]["applications"] == [FOREIGN]


def test_a_change_between_read_and_write_is_merged_not_lost(tmp_path: Path) -> None:
    fake = FakeDashboard({"other": live(FOREIGN)})

    def someone_else_deploys(get_number: int) -> None:
        if get_number == 2:  # between gale's read and its check
            fake.apps["late"] = live({**FOREIGN, "name": "late"})

    fake.on_get = someone_else_deploys
    client_for(fake, tmp_path).apply_application(gale_app())
    (put,) = fake.puts
    assert sorted(a["name"] for a in put["applications"]) == ["chat", "late", "other"]


def test_a_config_that_keeps_changing_is_an_error(tmp_path: Path) -> None:
    fake = FakeDashboard()
    fake.on_get = lambda n: fake.apps.update({f"app{n}": live({**FOREIGN, "name": f"app{n}"})})
    with pytest.raises(ClusterError, match="changed during each"):
        client_for(fake, tmp_path).apply_application(gale_app())
    assert fake.puts == []


def test_remote_cluster_keeps_its_own_http_options(tmp_path: Path) -> None:
    fake = FakeDashboard()
    client_for(fake, tmp_path, url="http://ray.example:8265").apply_application(gale_app())
    assert "http_options" not in fake.puts[0]


# -- authentication and errors -------------------------------------------------


def test_token_and_non_browser_agent_are_sent(tmp_path: Path) -> None:
    fake = FakeDashboard()
    client_for(fake, tmp_path).get_applications()
    request = fake.requests[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    agent = request.headers["user-agent"]
    assert agent.startswith("gale") and "Mozilla" not in agent
    assert "origin" not in request.headers and "referer" not in request.headers


def test_unreachable_dashboard(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ClusterUnreachable) as caught:
        client_for(refuse, tmp_path).get_applications()
    error = caught.value
    assert error.message.startswith("cannot reach the Ray dashboard at http://127.0.0.1:8265: ")
    assert "gale cluster up" in (error.hint or "") and "GALE_RAY_ADDRESS" in (error.hint or "")
    assert error.exit_code == 1


@pytest.mark.parametrize(("status", "words"), [(401, "requires a token"), (403, "refused")])
def test_refused_token_is_an_auth_error(tmp_path: Path, status: int, words: str) -> None:
    fake = FakeDashboard()
    fake.status_override = status
    with pytest.raises(AuthError, match=words) as caught:
        client_for(fake, tmp_path).get_applications()
    assert caught.value.exit_code == 1


def test_token_never_appears_in_errors(tmp_path: Path) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text=f"bad header {request.headers['authorization']}")

    with pytest.raises(ClusterError) as caught:
        client_for(echo, tmp_path).get_applications()
    error = caught.value
    text = " ".join([str(error), error.message, error.hint or "", repr(error)])
    assert TOKEN not in text and "***" in text
    assert TOKEN not in repr(client_for(echo, tmp_path).config)


def test_config_from_env_token_precedence(tmp_path: Path) -> None:
    (tmp_path / "ray-token").write_text("gale-local-token\n")
    local = ClusterConfig.from_env({"GALE_HOME": str(tmp_path)})
    assert (local.token, local.token_source) == ("gale-local-token", str(tmp_path / "ray-token"))
    explicit = ClusterConfig.from_env({"GALE_HOME": str(tmp_path), "RAY_AUTH_TOKEN": "env-token"})
    assert (explicit.token, explicit.token_source) == ("env-token", "RAY_AUTH_TOKEN")
    remote = ClusterConfig.from_env(
        {"GALE_HOME": str(tmp_path), "GALE_RAY_ADDRESS": "ray.example:8265", "GALE_INSECURE": "1"}
    )
    assert remote.dashboard_url == "http://ray.example:8265" and not remote.is_local
    assert remote.token != "gale-local-token"  # the local head's token never leaves


# -- waiting for RUNNING ---------------------------------------------------------


def sequence(fake: FakeDashboard, states: list[dict]) -> None:
    """Serve `states` of the app 'chat' one GET at a time, then repeat the last."""
    fake.on_get = lambda n: fake.apps.update({"chat": states[min(n, len(states)) - 1]})


def deployment(message: str = "", replicas: tuple[str, ...] = ("STARTING",)) -> dict:
    return {
        "GaleModel": {
            "status": "UPDATING",
            "message": message,
            "target_num_replicas": 1,
            "replicas": [{"state": s, "pid": 1} for s in replicas],
        }
    }


def test_wait_returns_when_running(tmp_path: Path) -> None:
    config = gale_app()
    fake = FakeDashboard()
    sequence(
        fake,
        [
            live(config, "DEPLOYING", last_deployed_time_s=50.0),
            live(config, "DEPLOYING", deployments=deployment()),
            live(config, "RUNNING", deployments=deployment(replicas=("RUNNING",))),
        ],
    )
    seen: list[Progress] = []
    app = client_for(fake, tmp_path).wait_for_application(
        "chat", 10, seen.append, since=60.0, poll_interval=0.01
    )
    assert app["status"] == "RUNNING"
    assert [p.status for p in seen] == ["PENDING", "DEPLOYING"]
    spec = DeploymentSpec(name="chat", model="smollm2-135m-instruct", hardware="cpu")
    assert seen[1].replicas == {"STARTING": 1}
    assert describe_progress(spec, seen[1]) == (
        "Deploying: 0 replica(s) running (min 1, max 1); 1 starting"
    )


def test_wait_raises_deploy_failed_with_rays_message(tmp_path: Path) -> None:
    fake = FakeDashboard()
    failed = live(gale_app(), "DEPLOY_FAILED", message="ModelLoadError: no such file")
    sequence(fake, [live(gale_app(), "DEPLOYING"), failed])
    with pytest.raises(DeployFailed, match="ModelLoadError: no such file"):
        client_for(fake, tmp_path).wait_for_application("chat", 10, poll_interval=0.01)


def test_unschedulable_replica_waits_for_hardware_then_times_out(tmp_path: Path) -> None:
    fake = FakeDashboard(nodes=[{"CPU": 16.0, "memory": 64.0 * GIB}])
    stuck = live(gale_app(hardware="a10-x4"), "DEPLOYING", deployments=deployment())
    sequence(fake, [stuck])
    seen: list[Progress] = []
    with pytest.raises(DeployTimeout) as caught:
        client_for(fake, tmp_path).wait_for_application(
            "chat", 0.2, seen.append, poll_interval=0.01
        )
    expected = "needs 4 × A10G per replica; the cluster has 0"
    spec = DeploymentSpec(name="chat", model="smollm2-135m-instruct", hardware="a10-x4")
    assert [describe_progress(spec, p) for p in seen] == [f"Waiting for hardware: {expected}"]
    assert "waiting for hardware" in caught.value.message and expected in caught.value.message


def test_rays_slow_scheduling_message_reports_busy_hardware(tmp_path: Path) -> None:
    message = (
        "Deployment 'GaleModel' in application 'chat' has 1 replicas that have taken more "
        "than 30s to be scheduled. This may be due to waiting for the cluster to auto-scale "
        "or for a runtime environment to be installed. Resources required for each replica: "
        '{"CPU": 2.0, "memory": 4294967296}, total resources available: {"CPU": 1.0}. '
        "Use `ray status` for more details."
    )
    fake = FakeDashboard(nodes=[{"CPU": 8.0, "memory": 16.0 * GIB}])
    sequence(fake, [live(gale_app(), "DEPLOYING", deployments=deployment(message))])
    with pytest.raises(DeployTimeout, match="free now: 1 CPU, 0 GiB memory"):
        client_for(fake, tmp_path).wait_for_application("chat", 0.05, poll_interval=0.01)


# -- placement wording ------------------------------------------------------------

A10_X4 = placement.replica_needs(
    {"num_cpus": 8, "num_gpus": 4, "memory": 64 * GIB, "accelerator_type": "A10G"}
)


@pytest.mark.parametrize(
    ("needs", "nodes", "expected"),
    [
        (A10_X4, [{"CPU": 16.0, "memory": 64.0 * GIB}], "needs 4 × A10G per replica; the cluster has 0"),
        (A10_X4, [{"CPU": 16.0, "memory": 128.0 * GIB, "GPU": 8.0, "accelerator_type:T4": 1.0}],
         "needs 4 × A10G per replica; the cluster has 0"),
        (A10_X4, [{"CPU": 16.0, "memory": 128.0 * GIB, "GPU": 8.0, "accelerator_type:A10G": 8.0}],
         None),
        (A10_X4, [{"CPU": 16.0, "memory": 128.0 * GIB, "GPU": 2.0, "accelerator_type:A10G": 1.0}] * 2,
         "needs 4 × A10G per replica; the cluster has no node with that many (largest: 2 × A10G)"),
        (placement.replica_needs({"num_cpus": 8, "memory": 32 * GIB}), [{"CPU": 2.0, "memory": 8.0 * GIB}],
         "needs 8 CPU, 32 GiB memory per replica; the cluster has 2 CPU, 8 GiB memory"),
    ],
)  # fmt: skip
def test_shortfall_wording(needs: dict, nodes: list, expected: str | None) -> None:
    assert placement.shortfall(needs, nodes) == expected


# -- the local head's command line and token -----------------------------------------


def test_local_head_command_declares_logical_hardware(tmp_path: Path) -> None:
    config = ClusterConfig(gale_home=tmp_path)
    cpu_only = local_head.start_command(config, 0, None)
    assert cpu_only[0] == str(Path(sys.executable).parent / "ray")
    assert cpu_only[1:3] == ["start", "--head"]
    assert "--dashboard-host=127.0.0.1" in cpu_only and "--dashboard-port=8265" in cpu_only
    # Two replicas of the largest CPU profile (8 CPUs, 32 GB), so a surge can place one.
    assert "--num-cpus=16" in cpu_only and f"--memory={64 * GIB}" in cpu_only
    assert not any(arg.startswith("--num-gpus") for arg in cpu_only)

    gpus = local_head.start_command(config, 4, "A10G")
    assert "--num-gpus=4" in gpus
    assert '--resources={"accelerator_type:A10G": 4}' in gpus
    assert "--num-cpus=16" in gpus and f"--memory={128 * GIB}" in gpus  # a10-x4 twice


def test_local_token_is_generated_once_and_private(tmp_path: Path) -> None:
    config = ClusterConfig(gale_home=tmp_path / "home")
    token = local_head.ensure_token(config)
    assert len(token) == 64 and local_head.ensure_token(config) == token
    assert stat.S_IMODE(config.token_file.stat().st_mode) == 0o600
    env = local_head._head_env(config.with_token(token, str(config.token_file)), token)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(config.token_file)
    assert "RAY_AUTH_TOKEN" not in env


def test_local_head_refuses_a_remote_address(tmp_path: Path) -> None:
    config = ClusterConfig(dashboard_url="http://ray.example:8265", gale_home=tmp_path)
    with pytest.raises(UsageError, match="not this machine") as caught:
        local_head.start_local_head(config=config)
    assert caught.value.exit_code == 2
