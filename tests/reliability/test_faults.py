"""Faults (full form): a replica killed under load, the Serve controller killed, the dashboard
unreachable during a deploy, Ctrl-C during a deploy.

Each scenario records what the user sees, what is lost and how long recovery takes in
bench-results/reliability-faults.json, and asserts the parts that must hold: bounded
loss, recovery within a deadline, nothing deployed or stored is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import BackgroundLoad, Target
from devstack import eventually
from gale_cli.cluster import ServeClient
from serving.serve_config import model_status, to_serve_application
from tests.conftest import Deployed
from tests.reliability.conftest import full_only

pytestmark = [pytest.mark.cluster, pytest.mark.model, full_only]
GALE = str(Path(sys.executable).parent / "gale")
RECORD = Path("bench-results/reliability-faults.json")
# A worker node with the head's accelerator: a second home for a profile that takes a node.
A10G_WORKER = ["--gpus", "4", "--accelerator", "A10G", "--cpus", "8", "--memory", "64"]


def record(scenario: str, **facts: Any) -> None:
    """Keep what a scenario showed, for the closing note."""
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    data[scenario] = facts
    RECORD.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{scenario}: {json.dumps(facts)}")


def _model_replicas(client: ServeClient, name: str) -> list[dict[str, Any]]:
    return list(model_status(client.get_application(name) or {}).get("replicas") or [])


def running_pids(client: ServeClient, name: str) -> set[int]:
    app = client.get_application(name) or {}
    return {r["pid"] for r in model_status(app).get("replicas", []) if r.get("state") == "RUNNING"}


@contextlib.contextmanager
def replicas(deployed: Deployed, count: int, **changes: object) -> Iterator[None]:
    """The session deployment at `count` replicas (in place), with `changes` to its spec
    (in-place fields only), back to one and its own spec afterwards."""
    update = {"min_replicas": count, "max_replicas": count, **changes}
    spec = deployed.spec.model_copy(update=update)
    deployed.client.apply_application(to_serve_application(spec, [deployed.record]))
    try:
        eventually(
            lambda: len(running_pids(deployed.client, deployed.name)) == count,
            300,
            f"{count} replicas",
        )
        yield
    finally:
        deployed.apply([deployed.record])
        eventually(
            lambda: len(running_pids(deployed.client, deployed.name)) == 1, 300, "back to 1 replica"
        )


def test_replica_killed_under_load(bundled_model: Deployed) -> None:
    client, name = bundled_model.client, bundled_model.name
    target = Target(bundled_model.base_url, bundled_model.key, name)
    with replicas(bundled_model, 2):
        victim = min(running_pids(client, name))
        with BackgroundLoad(target, 8, max_tokens=8, max_duration=400) as load:
            eventually(lambda: time.monotonic() - load.started > 3, 10, "load running")
            killed_at = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            eventually(
                lambda: len(running_pids(client, name) - {victim}) == 2,
                300,
                "replacement RUNNING",
                0.25,
            )
            recovered = time.perf_counter()
            # Some traffic after the recovery too.
            eventually(lambda: time.perf_counter() - recovered > 3, 10, "load after recovery")
            run = load.stop()
    failed = [r for r in run.results if not r.ok]
    record(
        "replica killed under load, 2 replicas",
        requests=len(run.results),
        failed=len(failed),
        failures_seen_by_clients=sorted({f"{r.status} {r.error[:120]}" for r in failed})[:5],
        replacement_running_s=round(recovered - killed_at, 1),
    )
    # The ingress calls again the requests whose replica died before answering: none fails.
    assert not failed, failed[:3]
    assert recovered - killed_at < 300


def _controller_pid(client: ServeClient) -> int:
    token = client.config.token
    response = httpx.get(
        client.config.dashboard_url + "/api/v0/actors",
        params={
            "detail": "1",
            "filter_keys": "class_name",
            "filter_predicates": "=",
            "filter_values": "ServeController",
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    response.raise_for_status()
    rows = [r for r in response.json()["data"]["result"]["result"] if r.get("state") == "ALIVE"]
    assert len(rows) == 1, rows
    return int(rows[0]["pid"])


def test_serve_controller_killed(bundled_model: Deployed) -> None:
    client, name = bundled_model.client, bundled_model.name
    target = Target(bundled_model.base_url, bundled_model.key, name)
    pid = _controller_pid(client)
    replicas_before = running_pids(client, name)
    with BackgroundLoad(target, 4, max_tokens=8, max_duration=300) as load:
        eventually(lambda: time.monotonic() - load.started > 2, 10, "load running")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def controller_back() -> bool:
            try:
                new_pid = _controller_pid(client)
                app = client.get_application(name) or {}
            except Exception:
                return False
            return new_pid != pid and app.get("status") == "RUNNING"

        eventually(controller_back, 180, "a new Serve controller reporting RUNNING", 0.25)
        back_s = time.monotonic() - killed_at
        # The control plane works again: an in-place change is applied.
        applied = bundled_model.apply([bundled_model.record])
        client.wait_for_application(
            name, 120, since=applied.previous_deploy_time, poll_interval=0.25
        )
        run = load.stop()
    failed = [r for r in run.results if not r.ok]
    record(
        "Serve controller killed",
        requests=len(run.results),
        failed=len(failed),
        controller_back_s=round(back_s, 1),
        same_replicas=running_pids(client, name) == replicas_before,
    )
    assert not failed, failed[:3]
    assert running_pids(client, name) == replicas_before


class CuttableProxy:
    """A loopback TCP forwarder to the dashboard that can be cut, as a network would be."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut_event = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_event.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self.sockets += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.cut_event.set()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes blocked readers, unlike close() alone
            with contextlib.suppress(OSError):
                s.close()


def _deploy_argv(name: str, *extra: str) -> list[str]:
    return [
        GALE,
        "deploy",
        "--no-input",
        "--accept-terms",
        "--model",
        "smollm2-135m-instruct",
        "--name",
        name,
        "--hardware",
        "cpu",
        "--max-length",
        "16",
        *extra,
    ]


@pytest.fixture
def gale_env(tmp_path: Path, ray_cluster: ServeClient) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "GALE_HOME": str(home), "RAY_AUTH_TOKEN": ray_cluster.config.token or ""}


def _delete(name: str, env: dict[str, str], client: ServeClient) -> None:
    subprocess.run(
        [GALE, "delete", name, "--yes"], env=env, capture_output=True, timeout=300, check=False
    )
    client.wait_for_removal(name, 120)


def test_dashboard_unreachable_during_deploy(
    ray_cluster: ServeClient, gale_env: dict[str, str]
) -> None:
    name = "fault-dash"
    proxy = CuttableProxy(("127.0.0.1", 8265))
    env = {**gale_env, "GALE_RAY_ADDRESS": f"http://127.0.0.1:{proxy.port}"}
    started = time.monotonic()
    child = subprocess.Popen(
        _deploy_argv(name, "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(lambda: ray_cluster.get_application(name) is not None, 120, "the app submitted")
        proxy.cut()
        out, err = child.communicate(timeout=120)
        gave_up_s = time.monotonic() - started
        answer = json.loads(out)
        ray_cluster.wait_for_application(name, 600, poll_interval=0.5)
        running_s = time.monotonic() - started
        key_works = (
            httpx.get(
                ray_cluster.config.serve_url + f"/{name}/v1/models",
                headers={"Authorization": f"Bearer {answer['api_key']}"},
                timeout=30,
                trust_env=False,
            ).status_code
            == 200
        )
        status = subprocess.run(
            [GALE, "status", name], env=gale_env, capture_output=True, text=True, timeout=60
        )
        record(
            "dashboard unreachable during a deploy",
            exit_code=child.returncode,
            user_sees=err.strip().splitlines()[-3:],
            json_status=answer.get("status"),
            cli_gave_up_s=round(gave_up_s, 1),
            app_running_s=round(running_s, 1),
            key_still_works=key_works,
            status_after=(status.stdout + status.stderr).strip().splitlines()[:4],
        )
        assert child.returncode == 1
        # A cut connection shows as unreachable or as no answer in time: either way one
        # line that names the dashboard, not a traceback.
        assert "Traceback" not in err and "Ray dashboard" in err
        assert answer["api_key"].startswith("gale-")
        assert key_works and status.returncode == 0
    finally:
        proxy.cut()
        if child.poll() is None:
            child.kill()
        _delete(name, gale_env, ray_cluster)


def test_ctrl_c_during_deploy(ray_cluster: ServeClient, gale_env: dict[str, str]) -> None:
    name = "fault-sigint"
    started = time.monotonic()
    child = subprocess.Popen(
        _deploy_argv(name), env=gale_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        eventually(lambda: ray_cluster.get_application(name) is not None, 120, "the app submitted")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        listed = subprocess.run(
            [GALE, "list", "--json"], env=gale_env, capture_output=True, text=True, timeout=60
        )
        ray_cluster.wait_for_application(name, 600, poll_interval=0.5)
        running_s = time.monotonic() - started
        record(
            "Ctrl-C during a deploy",
            exit_code=child.returncode,
            user_sees=(out + err).strip().splitlines()[-3:],
            key_was_shown="API key" in (out + err),
            listed_after=name in listed.stdout,
            app_running_s=round(running_s, 1),
        )
        assert child.returncode == 130
        assert "Traceback" not in err
        assert "API key" in out + err
        assert name in listed.stdout
    finally:
        if child.poll() is None:
            child.kill()
        _delete(name, gale_env, ray_cluster)


def test_worker_node_stopped_under_load(
    bundled_model: Deployed, ray_cluster: ServeClient, delete_after: Callable[..., str]
) -> None:
    """Two replicas, one on the head and one on a worker node that is stopped under load."""
    from tests.integration.test_nodes import Worker, _cluster

    head = next(n for n in _cluster()["nodes"] if n["role"] == "head")
    worker = Worker(f"{head['ip']}:6379", A10G_WORKER)
    name = delete_after("node-loss", wait_removed=False)
    try:
        worker_id = worker.join()
        # a10-x4 takes a whole node's four A10Gs: one replica on the head, one on the worker.
        deployed = subprocess.run(
            [GALE, "deploy", "--no-input", "--accept-terms", "--json", "--name", name,
             "--model", bundled_model.spec.model, "--temperature", "0", "--max-length", "32",
             "--engine", "llamacpp", "--hardware", "a10-x4",
             "--min-replicas", "2", "--max-replicas", "2"],
            capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        result = json.loads(deployed.stdout)
        nodes = {str(r.get("node_id")) for r in _model_replicas(ray_cluster, name)}
        assert worker_id in nodes and len(nodes) == 2, nodes
        target = Target(result["endpoint"], result["api_key"], name)
        with (
            BackgroundLoad(target, 6, max_tokens=8, max_duration=300) as load,
            BackgroundLoad(target, 2, max_tokens=32, stream=True, max_duration=300) as streams,
        ):
            eventually(lambda: time.monotonic() - load.started > 3, 10, "load running")
            stopped_at = time.monotonic()
            worker.stop()
            stop_s = time.monotonic() - stopped_at
            eventually(lambda: time.monotonic() - stopped_at > stop_s + 5, 60, "load after")
            run, streamed = load.stop(), streams.stop()
    finally:
        worker.stop()
    failed = [r for r in run.results if not r.ok]
    broken = [r for r in streamed.results if not r.ok]
    record(
        "worker node stopped under load, 2 replicas",
        requests=len(run.results),
        failed=len(failed),
        failures_seen_by_clients=sorted({f"{r.status} {r.error[:120]}" for r in failed})[:5],
        streams=len(streamed.results),
        streams_broken=len(broken),
        node_stop_s=round(stop_s, 1),
    )
    assert not failed, failed[:3]
    assert len(run.results) >= 6
