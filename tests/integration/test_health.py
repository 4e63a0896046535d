"""A replica whose engine hangs is found by the health check and replaced.

The engine here is llama.cpp (the bundled GGUF on CPU): stopping its llama-server
with SIGSTOP leaves the replica's actor answering Ray while nothing generates,
the case a liveness check misses. The one-token probe of `serving.health` times
out, Serve marks the replica unhealthy and starts another; the endpoint answers
again with the same key.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest

from devstack import BUNDLED_MODEL, eventually
from gale_cli.cluster import ServeClient
from serving.serve_config import DEPLOYMENT_NAME
from tests.conftest import gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]


def _model_replicas(client: ServeClient, name: str) -> list[dict[str, Any]]:
    app = client.get_application(name) or {}
    deployment = (app.get("deployments") or {}).get(DEPLOYMENT_NAME) or {}
    return list(deployment.get("replicas") or [])


def _running_pid(client: ServeClient, name: str) -> int | None:
    running = [r["pid"] for r in _model_replicas(client, name) if r["state"] == "RUNNING"]
    return running[0] if len(running) == 1 else None


def _llama_server(replica_pid: int) -> psutil.Process:
    (server,) = [
        child
        for child in psutil.Process(replica_pid).children()
        if child.name().startswith("llama-server")
    ]
    return server


def test_a_replica_whose_engine_hangs_is_replaced(
    ray_cluster: ServeClient, delete_after: Callable[..., str]
) -> None:
    name = delete_after("hangs")
    deployed = gale(
        "deploy", "--no-input", "--accept-terms", "--json", "--name", name,
        "--model", BUNDLED_MODEL, "--temperature", "0", "--engine", "llamacpp", "--hardware", "cpu",
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    result = json.loads(deployed.stdout)
    old = _running_pid(ray_cluster, name)
    assert old is not None
    server = _llama_server(old)
    server.send_signal(signal.SIGSTOP)
    try:
        new = eventually(
            lambda: (pid := _running_pid(ray_cluster, name)) not in (None, old) and pid,
            240,
            "Serve replaces the replica whose engine hangs",
            interval=1,
        )
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            server.send_signal(signal.SIGCONT)
    # The old replica went with its engine: llama-server dies with its parent.
    eventually(
        lambda: not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE,
        60,
        "the hung llama-server is gone",
    )
    assert new != old
    answer = httpx.post(
        f"{result['endpoint']}/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {result['api_key']}"},
        timeout=120,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
