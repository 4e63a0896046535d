"""A real two-node cluster on one machine: the session's head and a worker node that joins it.

The worker joins with `gale cluster join --block` as a separate raylet declaring
one logical L4 GPU, which the head (4 × A10G) lacks, so the `l4-single` profile
can only land there. Stopping the worker loses the node; joining again brings
the replica back at the same endpoint, with the same key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devstack import BUNDLED_MODEL, GALE, eventually
from gale_cli.cluster import ServeClient
from tests.conftest import gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]

FLAGS = ["--no-input", "--accept-terms", "--model", BUNDLED_MODEL, "--temperature", "0"]
WORKER = ["--gpus", "1", "--accelerator", "L4", "--cpus", "4", "--memory", "16"]


def _cluster() -> dict[str, Any]:
    shown = gale("cluster", "status", "--json", timeout=60)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


class Worker:
    """A worker node in the foreground (`gale cluster join --block`), stopped by SIGTERM."""

    def __init__(self, address: str, flags: list[str] | None = None) -> None:
        self.address = address
        self.flags = WORKER if flags is None else flags
        self.process: subprocess.Popen[str] | None = None

    def join(self) -> str:
        """Start the node; return its id once the head lists it."""
        self.process = subprocess.Popen(
            [str(GALE), "cluster", "join", self.address, *self.flags, "--block"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return eventually(self.node_id, 60, "the worker node joins")

    def node_id(self) -> str | None:
        """The id of the alive worker node this one declares, once the head lists it."""
        accelerator = self.flags[self.flags.index("--accelerator") + 1]
        for node in _cluster()["nodes"]:
            alive = node["state"] == "alive" and node["role"] != "head"
            if alive and f"accelerator_type:{accelerator}" in node["resources"]:
                return str(node["node_id"])
        return None

    def stop(self) -> None:
        """Stop the node (Ray drains it, then stops its processes)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def worker(ray_cluster: ServeClient) -> Iterator[Worker]:
    """A worker node of the session's head, always stopped at the end."""
    head = next(n for n in _cluster()["nodes"] if n["role"] == "head")
    node = Worker(f"{head['ip']}:6379")
    try:
        yield node
    finally:
        node.stop()
        eventually(lambda: node.node_id() is None, 60, "the worker node is gone")


def _replica_nodes(client: ServeClient, name: str) -> list[tuple[str, str]]:
    app = client.get_application(name) or {}
    deployment = (app.get("deployments") or {}).get("GaleModel") or {}
    return [(r["state"], str(r.get("node_id"))) for r in deployment.get("replicas") or []]


def _chat(result: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{result['endpoint']}/chat/completions",
        json={"model": result["name"], "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {result['api_key']}"},
        timeout=120,
        trust_env=False,
    )


def test_a_gpu_profile_lands_on_its_node_waits_when_it_is_lost_and_returns_when_it_rejoins(
    ray_cluster: ServeClient, worker: Worker, delete_after: Callable[..., str]
) -> None:
    worker_id = worker.join()
    name = delete_after("on-l4", wait_removed=False)
    deployed = gale("deploy", *FLAGS, "--json", "--name", name, "--hardware", "l4-single")
    assert deployed.returncode == 0, deployed.stderr
    result = json.loads(deployed.stdout)
    assert _replica_nodes(ray_cluster, name) == [("RUNNING", worker_id)]

    shown = gale("status", name, "--json")
    assert shown.returncode == 0, shown.stderr
    (replica,) = json.loads(shown.stdout)["replicas_on"]
    assert replica["node_id"] == worker_id and "worker" in replica["node"]
    assert f"on node {worker_id[:8]}" in gale("status", name).stderr
    (on_worker,) = [n for n in _cluster()["nodes"] if n["node_id"] == worker_id]
    assert [r["application"] for r in on_worker["replicas"]] == [name]
    assert _chat(result).status_code == 200

    worker.stop()

    seen: list[dict[str, Any]] = []

    def lost() -> dict[str, Any] | None:
        seen.append(json.loads(gale("status", name, "--json").stdout))
        status = seen[-1]
        waiting = "lost_node" in status and "Waiting for hardware" in status.get("detail", "")
        return status if waiting else None

    try:
        status = eventually(lost, 120, "status says the node was lost", interval=2)
    except TimeoutError:
        pytest.fail(f"status never said the node was lost; last: {seen[-1:]}")
    assert worker_id[:8] in status["lost_node"]
    assert "1 × L4" in status["detail"]

    back = worker.join()
    assert back != worker_id  # a new node: Ray gives each start its own id

    def running_on_new_node() -> bool:
        return _replica_nodes(ray_cluster, name) == [("RUNNING", back)]

    eventually(running_on_new_node, 240, "the replica runs again on the rejoined node", interval=1)
    app = ray_cluster.get_application(name)
    assert app is not None and app["route_prefix"] == f"/{name}"
    # The head's proxy learns of the new replica by a long poll of Serve's controller,
    # which can lag the replica's RUNNING by a moment on a loaded machine.
    answers: list[httpx.Response] = []

    def answered() -> bool:
        answers.append(_chat(result))
        return answers[-1].status_code == 200

    try:
        eventually(answered, 30, "the same endpoint answers with the same key", interval=1)
    except TimeoutError:
        pytest.fail(
            f"no answer after the rejoin; last: {answers[-1].status_code} {answers[-1].text}"
        )
