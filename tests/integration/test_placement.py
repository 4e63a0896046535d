"""GPU profiles on the session head's 4 logical A10G GPUs: placed for real, or refused with why."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from devstack import BUNDLED_MODEL
from gale_cli.cluster import ServeClient
from tests.conftest import HEAD_ACCELERATOR, HEAD_GPUS, gale

pytestmark = pytest.mark.cluster

FLAGS = ["--no-input", "--accept-terms", "--model", BUNDLED_MODEL, "--temperature", "0"]


def test_the_head_declares_logical_gpus(ray_cluster: ServeClient) -> None:
    shown = gale("cluster", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    resources = json.loads(shown.stdout)["resources"]
    assert resources["GPU"] == HEAD_GPUS
    assert resources[f"accelerator_type:{HEAD_ACCELERATOR}"] == HEAD_GPUS


@pytest.mark.model
def test_a10_x4_is_placed_on_logical_gpus_and_runs_on_cpu(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    name = delete_after("four-a10")
    deployed = gale("deploy", *FLAGS, "--json", "--name", name, "--hardware", "a10-x4")
    assert deployed.returncode == 0, deployed.stderr
    result = json.loads(deployed.stdout)
    assert result["status"] == "Deployed"

    app = ray_cluster.get_application(name)
    assert app is not None and app["status"] == "RUNNING"
    options = app["deployed_app_config"]["deployments"][0]["ray_actor_options"]
    assert (options["num_gpus"], options["accelerator_type"]) == (4, "A10G")
    replicas = app["deployments"]["GaleModel"]["replicas"]
    assert [r["state"] for r in replicas] == ["RUNNING"]

    # No GPU exists here: the engine says it runs on CPU, and which profile asked for GPUs.
    health = httpx.get(
        result["endpoint"].removesuffix("/v1") + "/health", trust_env=False, timeout=30
    )
    assert health.status_code == 200, health.text
    device = health.json()["device"]
    assert device.startswith("CPU"), device
    assert "a10-x4 asks for 4 GPU(s)" in device
    reply = httpx.post(
        f"{result['endpoint']}/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {result['api_key']}"},
        timeout=120,
        trust_env=False,
    )
    assert reply.status_code == 200, reply.text


def test_a_profile_the_cluster_lacks_times_out_saying_what_is_missing(
    ray_cluster: ServeClient, delete_after: Callable[..., str]
) -> None:
    name = delete_after("no-h100", wait_removed=False)
    result = gale("deploy", *FLAGS, "--name", name, "--hardware", "h100-single", "--timeout", "20")
    assert result.returncode == 1, result.stderr
    assert "needs 1 × H100 per replica; the cluster has 0" in result.stderr
    assert "still waiting for hardware after 20s" in result.stderr
    assert "Traceback" not in result.stderr
    # The cluster keeps trying to place it, and gale says so.
    shown = gale("status", name, "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["status"] == "Deploying"
    assert "needs 1 × H100" in status["detail"]
    [replica] = status["starting"]
    assert replica["phase"] == "waiting for hardware"
    assert "needs 1 × H100" in replica["missing"]
    assert replica["seconds"] >= 0
