"""The llama.cpp engine in a real Serve replica: the bundled GGUF on the `cpu` profile.

llama-server starts in a second or two, so this module deploys its own
application (engine=llamacpp, two slots), checks it answers and streams, that
the server runs as the replica's child with the GGUF's quantized weights, and
that removing the application ends the server too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from devstack import BUNDLED_MODEL, eventually
from gale_cli.cluster import ServeClient
from serving.engines.llamacpp_server import server_binary
from serving.keys import generate_key
from serving.serve_config import model_status, to_serve_application
from serving.spec import DeploymentSpec
from tests.conftest import DEPLOY_TIMEOUT_S

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.model,
    pytest.mark.skipif(
        server_binary() is None,
        reason="llama-server is not built (make install builds it into .venv/bin)",
    ),
]
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def _servers_under(pid: int) -> set[int]:
    """llama-server processes started by the process `pid`."""
    return {
        child
        for child in _children(pid)
        if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].endswith(b"llama-server")
    }


def test_llamacpp_replica_serves_and_its_server_goes_with_it(ray_cluster: ServeClient) -> None:
    spec = DeploymentSpec(
        name="smol-llamacpp",
        model=BUNDLED_MODEL,
        hardware="cpu",
        engine="llamacpp",
        temperature=0,
        max_length=64,
        batch_size=2,
    )
    key, record = generate_key("tests")
    started = time.monotonic()
    applied = ray_cluster.apply_application(to_serve_application(spec, [record]))
    base_url = ray_cluster.config.serve_url + f"/{spec.name}/v1"
    servers: set[int] = set()
    try:
        ray_cluster.wait_for_application(
            spec.name, DEPLOY_TIMEOUT_S, since=applied.previous_deploy_time
        )
        print(f"\n{spec.name}: PUT → RUNNING in {time.monotonic() - started:.1f}s")
        health = httpx.get(base_url.removesuffix("/v1") + "/health", timeout=30).json()
        assert "llama.cpp" in health["device"] and health["batch_size"] == 2

        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        reply = client.chat.completions.create(model=spec.name, messages=QUESTION)  # type: ignore[arg-type]
        assert "Paris" in (reply.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model=spec.name,
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        )
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        app = ray_cluster.get_application(spec.name) or {}
        replicas = [
            replica["pid"]
            for replica in model_status(app).get("replicas", [])
            if replica["state"] == "RUNNING"
        ]
        servers = {server for pid in replicas for server in _servers_under(pid)}
        assert len(servers) == 1  # one llama-server, a child of the replica
        # The local head runs Ray's workers at nice 0, not Ray's 15 (WORKER_NICENESS_ENV),
        # so llama.cpp's threads do not give way to Ray's daemons on their shared core.
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in [*replicas, *servers]} == {0}
    finally:
        ray_cluster.remove_application(spec.name)
        ray_cluster.wait_for_removal(spec.name, 120, poll_interval=0.5)
    eventually(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in servers),
        30,
        "the replica's llama-server ended",
    )
