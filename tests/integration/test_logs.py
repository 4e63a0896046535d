"""`gale logs` against a real local head: the replica's lines, newest last, no key, no token."""

from __future__ import annotations

import queue
import re
import subprocess
import threading

import httpx
import pytest

from devstack import GALE, eventually
from gale_cli.logs import line_time
from tests.conftest import Deployed, gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]


def test_logs_print_the_replicas_lines_newest_last(bundled_model: Deployed) -> None:
    token = bundled_model.client.config.token
    assert token
    headers = {"Authorization": f"Bearer {bundled_model.key}"}
    reply = httpx.get(f"{bundled_model.base_url}/models", headers=headers)
    assert reply.status_code == 200

    def logged() -> str | None:
        result = gale("logs", bundled_model.name, "--since", "1h")
        assert result.returncode == 0, result.stderr
        found = re.search(rf"GET /{bundled_model.name}\S* 200 ", result.stdout)
        return result.stdout if found else None

    text = eventually(logged, 30, "the request in the replica's log", 1.0)
    assert "gale: loading" in text and "applied user_config" in text
    assert bundled_model.key not in text and token not in text
    times = [at for at in map(line_time, text.splitlines()) if at is not None]
    assert times == sorted(times) and len(times) >= 4

    [replica] = bundled_model.client.get_application(bundled_model.name)["deployments"][
        "GaleModel"
    ]["replicas"]
    one = gale("logs", bundled_model.name, "--replica", replica["replica_id"][:4], "--tail", "3")
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.splitlines()) == 3
    assert all(replica["replica_id"] in line for line in one.stdout.splitlines())


def test_logs_refuse_a_missing_deployment_replica_or_duration(bundled_model: Deployed) -> None:
    missing = gale("logs", "no-such-model")
    assert missing.returncode == 2 and "no-such-model" in missing.stderr
    replica = gale("logs", bundled_model.name, "--replica", "nope")
    assert replica.returncode == 2 and "nope" in replica.stderr
    since = gale("logs", bundled_model.name, "--since", "ten minutes")
    assert since.returncode == 2 and "--since" in since.stderr


def test_logs_follow_prints_new_lines_as_they_come(bundled_model: Deployed) -> None:
    follower = subprocess.Popen(
        [str(GALE), "logs", bundled_model.name, "--follow", "--tail", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        lines.get(timeout=30)  # the tail: the stream is open
        marker = f"{bundled_model.base_url}/models"
        headers = {"Authorization": f"Bearer {bundled_model.key}"}

        def new_access_line() -> bool:
            assert httpx.get(marker, headers=headers).status_code == 200
            try:
                return bool(re.search(r"GET /\S* 200 ", lines.get(timeout=2)))
            except queue.Empty:
                return False

        eventually(new_access_line, 30, "a new request's line while following")
    finally:
        follower.terminate()
        follower.wait(10)
