"""Faults through the real CLI: concurrent deploys, no dashboard, a wrong token, Ctrl-C."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from devstack import BUNDLED_MODEL, GALE, eventually
from gale_cli.cluster import ServeClient
from tests.conftest import DEPLOY_TIMEOUT_S, gale

FLAGS = ["--no-input", "--accept-terms", "--json", "--model", BUNDLED_MODEL]
FLAGS += ["--hardware", "cpu", "--temperature", "0", "--max-length", "16"]


def start_deploy(name: str) -> subprocess.Popen[str]:
    """`gale deploy` as a background process, as a CI job would run it."""
    return subprocess.Popen(
        [str(GALE), "deploy", *FLAGS, "--name", name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listed(extra_env: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    result = gale("list", "--json", env=extra_env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def key_opens(endpoint: str, key: str) -> int:
    return httpx.get(
        f"{endpoint}/models", headers={"Authorization": f"Bearer {key}"}, trust_env=False
    ).status_code


@pytest.mark.cluster
@pytest.mark.model
def test_two_deploys_at_once_both_end_deployed(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    names = [delete_after("twin-a"), delete_after("twin-b")]
    processes = [start_deploy(name) for name in names]
    results = {}
    for name, process in zip(names, processes, strict=True):
        stdout, stderr = process.communicate(timeout=DEPLOY_TIMEOUT_S)
        assert process.returncode == 0, stderr
        results[name] = json.loads(stdout)
        assert results[name]["status"] == "Deployed"
        # The progress display named the replica's phase while it loaded the model.
        assert "1 starting — replica " in stderr and ": loading" in stderr, stderr
    # After the fact, describe tells how long that start took, phase by phase.
    described = gale("describe", names[0], "--json")
    assert described.returncode == 0, described.stderr
    last = json.loads(described.stdout)["last_start"]
    phases = [row["phase"] for row in last["phases"]]
    assert phases[-2:] == ["loading", "warming up"], last
    assert next(r["seconds"] for r in last["phases"] if r["phase"] == "loading") > 0
    assert last["total_s"] >= sum(row["seconds"] for row in last["phases"]) - 0.5
    rows = listed()
    assert {name: rows[name]["status"] for name in names} == dict.fromkeys(names, "Deployed")
    a, b = (results[name] for name in names)
    assert key_opens(a["endpoint"], a["api_key"]) == 200
    assert key_opens(b["endpoint"], b["api_key"]) == 200
    # A key of one deployment never opens another.
    assert key_opens(a["endpoint"], b["api_key"]) == 401


def test_an_unreachable_dashboard_is_a_clear_error() -> None:
    result = gale("list", env={"GALE_RAY_ADDRESS": "http://127.0.0.1:9"}, timeout=60)
    assert result.returncode == 1
    assert "cannot reach the Ray dashboard at http://127.0.0.1:9" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.cluster
def test_a_wrong_token_is_a_clear_error_that_never_shows_the_token(
    ray_cluster: ServeClient,
) -> None:
    token = "wrong-" + secrets.token_hex(16)
    wrong = {"RAY_AUTH_TOKEN": token}
    refused = gale("list", env=wrong, timeout=60)
    assert refused.returncode == 1
    assert "refused gale's token (from RAY_AUTH_TOKEN)" in refused.stderr
    assert "hint:" in refused.stderr
    deploy = gale("deploy", *FLAGS, "--name", "intruder", env=wrong, timeout=60)
    assert deploy.returncode == 1
    for shown in (refused, deploy):
        assert token not in shown.stdout + shown.stderr
        assert "Traceback" not in shown.stdout + shown.stderr
    assert "intruder" not in listed()
    assert ray_cluster.get_application("intruder") is None


@pytest.mark.cluster
@pytest.mark.model
def test_ctrl_c_while_waiting_leaves_a_truthful_status(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    name = delete_after("interrupted")
    process = start_deploy(name)
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")))
    reader.start()
    try:
        eventually(lambda: any(f"Deploying '{name}'" in line for line in lines), 60, "waiting")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130, "".join(lines)
        stdout = process.stdout.read() if process.stdout else ""
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=30)
    assert "interrupted" in "".join(lines)
    assert f"gale status {name}" in "".join(lines)
    printed = json.loads(stdout)
    assert printed["status"] == "Deploying"

    shown = gale("status", name, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] in {"Deploying", "Deployed"}
    assert listed()[name]["status"] in {"Deploying", "Deployed"}
    database = Path(os.environ["GALE_HOME"]) / "state.db"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The cluster went on deploying: it arrives, and the key printed before Ctrl-C opens it.
    eventually(
        lambda: json.loads(gale("status", name, "--json").stdout)["status"] == "Deployed",
        DEPLOY_TIMEOUT_S,
        "the interrupted deployment reaching Deployed",
        1.0,
    )
    assert key_opens(printed["endpoint"], printed["api_key"]) == 200
