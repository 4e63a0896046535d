"""One deployment's whole life through the real `gale` CLI, on the session's Ray head.

deploy → the openai SDK answers → redeploy in place under load → rolling redeploy
under load → keys create/revoke → undeploy (404) → redeploy (same endpoint, old
key) → delete. Each step checks what a user would see; figures are printed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import yaml

from devstack import BUNDLED_MODEL, eventually
from gale_cli.cluster import ServeClient
from serving.serve_config import model_status
from tests.conftest import gale

pytestmark = [pytest.mark.cluster, pytest.mark.model]

NAME = "life"
QUESTION = "Which city is the capital of France?"
LOAD_THREADS = 3
LOAD_MAX_REQUESTS = 5000
LOAD_MAX_SECONDS = 400


def ok_json(*args: str, timeout: float = 600) -> Any:
    """Run gale, require exit 0, and parse its stdout as JSON."""
    result = gale(*args, timeout=timeout)
    assert result.returncode == 0, f"gale {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


def replica_pids(client: ServeClient, name: str) -> set[int]:
    """Pids of the RUNNING replicas, from the Serve REST API."""
    app = client.get_application(name) or {}
    return {
        int(replica["pid"])
        for replica in model_status(app).get("replicas", [])
        if replica.get("state") == "RUNNING"
    }


def status_code(url: str, key: str) -> int:
    """What GET /models answers with this key (0 when the connection fails)."""
    try:
        return httpx.get(
            f"{url}/models", headers={"Authorization": f"Bearer {key}"}, trust_env=False
        ).status_code
    except httpx.TransportError:
        return 0


def ask(url: str, key: str) -> str:
    """Ask the question through the official openai SDK (no retries), greedily.

    Greedy per request: the deployment's own default temperature changes on the way.
    """
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


class Load:
    """Chat requests from a few threads until stopped (bounded in count and time)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        body = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        headers = {"Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        with httpx.Client(timeout=120, trust_env=False) as http:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if sum(self.outcomes.values()) >= LOAD_MAX_REQUESTS:
                        return
                try:
                    response = http.post(f"{self.url}/chat/completions", json=body, headers=headers)
                    outcome = "ok" if response.status_code == 200 else str(response.status_code)
                    detail = response.text[:200]
                except httpx.HTTPError as exc:
                    outcome, detail = type(exc).__name__, str(exc)
                with self._lock:
                    self.outcomes[outcome] += 1
                    if outcome != "ok":
                        self.failures.append(f"{outcome}: {detail}")

    def during(self, action: Callable[[], Any], tail: float = 2.0) -> Any:
        """Run `action` while the load runs, keep loading `tail` seconds after, then stop."""
        for thread in self._threads:
            thread.start()
        # Requests must be flowing before the change starts.
        eventually(lambda: self.outcomes["ok"] >= LOAD_THREADS, 60, "load warming up")
        try:
            result = action()
            # Keep loading a while, and until every thread has had an answer since.
            stop_at, served = time.monotonic() + tail, self.sent
            eventually(
                lambda: time.monotonic() >= stop_at and self.sent >= served + LOAD_THREADS,
                tail + 60,
                "load after the change",
            )
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=150)
        return result

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())


def redeploy_under_load(url: str, key: str, kind: str, *flags: str) -> tuple[Any, Load]:
    """`gale redeploy NAME <flags> --yes` while the load runs: it succeeds, no request fails."""
    load = Load(url, key)
    started = time.monotonic()
    result = load.during(lambda: gale("redeploy", NAME, *flags, "--yes"))
    print(
        f"{kind} redeploy in {time.monotonic() - started:.1f}s under load: "
        f"{load.sent} requests, {dict(load.outcomes)}"
    )
    assert result.returncode == 0, result.stderr
    assert load.failures == [], load.failures[:5]
    return result, load


def test_a_deployment_lifecycle_through_the_cli(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    delete_after(NAME)
    deploy_flags = ["--model", BUNDLED_MODEL, "--name", NAME, "--hardware", "cpu"]
    deploy_flags += ["--temperature", "0", "--max-length", "32"]

    # -- deploy: one JSON object for CI ------------------------------------------
    started = time.monotonic()
    deployed = ok_json("deploy", "--no-input", "--accept-terms", "--json", *deploy_flags)
    print(f"\ngale deploy → Deployed in {time.monotonic() - started:.1f}s")
    assert deployed["name"] == NAME
    assert deployed["status"] == "Deployed"
    url, key = deployed["endpoint"], deployed["api_key"]
    assert url == f"{ray_cluster.config.serve_url}/{NAME}/v1"
    assert key.startswith("gale-")

    # -- the official openai SDK answers with that key ----------------------------
    assert "Paris" in ask(url, key)

    # -- an existing name is refused, pointing at redeploy -------------------------
    again = gale("deploy", "--no-input", "--accept-terms", "--json", *deploy_flags)
    assert again.returncode == 2, again.stderr
    assert f"gale redeploy {NAME}" in again.stderr

    # -- gale chat --------------------------------------------------------------
    chat = gale("chat", NAME, QUESTION, timeout=180)
    assert chat.returncode == 0, chat.stderr
    assert "Paris" in chat.stdout

    # -- read commands never show the key ------------------------------------------
    # The chat's temporary key was revoked in place: the app is briefly "Deploying".
    described = eventually(
        lambda: (info := ok_json("describe", NAME, "--json"))["status"] == "Deployed" and info,
        30,
        "Deployed again after the chat's key was revoked",
        0.5,
    )
    assert described["endpoint"] == url
    assert described["spec"]["temperature"] == 0
    assert [set(k) for k in described["keys"]] == [{"id", "name", "prefix", "created_at"}]
    assert key.startswith(described["keys"][0]["prefix"])
    assert [r["action"] for r in described["revisions"]] == ["deploy"]
    for command in (["list"], ["list", "--json"], ["describe", NAME], ["status", NAME]):
        shown = gale(*command)
        assert shown.returncode == 0, shown.stderr
        assert key not in shown.stdout + shown.stderr, command
        if command[0] == "describe":
            assert f"Configuration of '{NAME}'" in shown.stderr and "Review" not in shown.stderr
    assert key not in json.dumps(described)
    assert key not in json.dumps(ok_json("status", NAME, "--json"))

    # -- export: a Serve config Ray itself accepts ---------------------------------
    from ray.serve.schema import ServeDeploySchema

    exported = gale("export", NAME, "--format", "serve")
    assert exported.returncode == 0, exported.stderr
    assert key not in exported.stdout
    schema = ServeDeploySchema.model_validate(yaml.safe_load(exported.stdout))
    assert [app.name for app in schema.applications] == [NAME]
    assert schema.applications[0].route_prefix == f"/{NAME}"

    # -- redeploy in place under load: same replicas, no failed request ---------------
    pids = replica_pids(ray_cluster, NAME)
    assert len(pids) == 1
    in_place, load = redeploy_under_load(url, key, "in-place", "--temperature", "0.5")
    assert "Applied in place" in in_place.stderr
    assert load.outcomes["ok"] >= LOAD_THREADS
    assert replica_pids(ray_cluster, NAME) == pids
    assert ok_json("describe", NAME, "--json")["spec"]["temperature"] == 0.5

    # -- rolling replacement under load (min replicas 1): no failed request ------------
    rolling, _ = redeploy_under_load(url, key, "rolling", "--hardware", "cpu-large")
    assert "rolling update" in rolling.stderr
    new_pids = eventually(
        lambda: (found := replica_pids(ray_cluster, NAME)) and not found & pids and found,
        120,
        "old replica replaced",
    )
    assert len(new_pids) == 1
    app = ray_cluster.get_application(NAME) or {}
    assert app["deployed_app_config"]["args"]["hardware"] == "cpu-large"

    # -- keys: a new one works, a revoked one is refused, within 5 s, no restart ---------
    started = time.monotonic()
    created = ok_json("keys", "create", NAME, "--key-name", "ci", "--json")
    returned = time.monotonic()
    assert set(created) >= {"id", "key"}
    eventually(lambda: status_code(url, created["key"]) == 200, 5, "new key accepted")
    print(
        f"new key works {time.monotonic() - returned:.2f}s after `gale keys create` returned "
        f"({time.monotonic() - started:.2f}s after it started)"
    )
    listed = ok_json("keys", "list", NAME, "--json")
    assert {k["id"] for k in listed} == {described["keys"][0]["id"], created["id"]}
    started = time.monotonic()
    revoked = gale("keys", "revoke", NAME, created["id"])
    returned = time.monotonic()
    assert revoked.returncode == 0, revoked.stderr
    eventually(lambda: status_code(url, created["key"]) == 401, 5, "revoked key refused")
    print(
        f"revoked key refused {time.monotonic() - returned:.2f}s after `gale keys revoke` "
        f"returned ({time.monotonic() - started:.2f}s after it started)"
    )
    assert status_code(url, key) == 200
    assert replica_pids(ray_cluster, NAME) == new_pids

    # -- undeploy: the endpoint answers 404, the configuration is kept -------------------
    undeployed = gale("undeploy", NAME)
    assert undeployed.returncode == 0, undeployed.stderr
    eventually(lambda: status_code(url, key) == 404, 120, "endpoint answering 404", 0.25)
    rows = {row["name"]: row for row in ok_json("list", "--json")}
    assert rows[NAME]["status"] == "Undeployed"
    assert rows[NAME]["endpoint"] == url

    # -- redeploy brings it back: same endpoint, the original key -----------------------
    started = time.monotonic()
    back = ok_json("redeploy", NAME, "--yes", "--json")
    print(f"redeploy after undeploy → Deployed in {time.monotonic() - started:.1f}s")
    assert back == {"name": NAME, "status": "Deployed", "endpoint": url}
    assert "Paris" in ask(url, key)
    assert status_code(url, created["key"]) == 401
    revisions = [r["action"] for r in ok_json("describe", NAME, "--json")["revisions"]]
    assert revisions[0] == "deploy" and revisions.count("redeploy") >= 3

    # -- delete: gone everywhere ------------------------------------------------------
    deleted = gale("delete", NAME, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert NAME not in {row["name"] for row in ok_json("list", "--json")}
    ray_cluster.wait_for_removal(NAME, 120, poll_interval=0.2)
    assert gale("status", NAME).returncode == 2
