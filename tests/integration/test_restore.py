"""A Ray cluster restarted from scratch: `gale restore` brings deployments back as they were.

This restarts the session's Ray head, so it is marked `restarts_cluster` and the
conftest runs it after every other test: the bundled-model fixture does not survive it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
import pytest

from devstack import BUNDLED_MODEL, eventually
from gale_cli.cluster import ServeClient
from tests.conftest import DEPLOY_TIMEOUT_S, HEAD_ACCELERATOR, HEAD_GPUS, gale

pytestmark = [pytest.mark.cluster, pytest.mark.model, pytest.mark.restarts_cluster]

NAME = "phoenix"


def status_of(name: str) -> str:
    result = gale("status", name, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["status"]


def test_restore_after_the_cluster_restarts(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    delete_after(NAME)
    flags = ["--model", BUNDLED_MODEL, "--name", NAME, "--hardware", "cpu"]
    deployed = gale(
        "deploy", "--no-input", "--accept-terms", "--json", *flags, "--temperature", "0"
    )
    assert deployed.returncode == 0, deployed.stderr
    before = json.loads(deployed.stdout)

    down = gale("cluster", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    unreachable = gale("list", timeout=60)
    assert unreachable.returncode == 1
    assert "cannot reach the Ray dashboard" in unreachable.stderr
    up = gale(
        "cluster", "up", "--gpus", str(HEAD_GPUS), "--accelerator", HEAD_ACCELERATOR, timeout=180
    )
    assert up.returncode == 0, up.stderr

    rows = {row["name"]: row for row in json.loads(gale("list", "--json").stdout)}
    assert rows[NAME]["status"] == "Not running"
    assert "gale restore" in rows[NAME]["message"]

    started = time.monotonic()
    restored = gale("restore", "--json")
    assert restored.returncode == 0, restored.stderr
    assert NAME in json.loads(restored.stdout)["restored"]
    eventually(lambda: status_of(NAME) == "Deployed", DEPLOY_TIMEOUT_S, "restored", 1.0)
    print(f"\ngale restore → Deployed in {time.monotonic() - started:.1f}s")

    endpoint = json.loads(gale("endpoint", NAME, "--json").stdout)["endpoint"]
    assert endpoint == before["endpoint"]
    client = openai.OpenAI(base_url=endpoint, api_key=before["api_key"], max_retries=0)
    reply = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        max_tokens=24,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    # Nothing left to restore: a second run changes nothing.
    again = gale("restore", "--json")
    assert json.loads(again.stdout)["restored"] == []
