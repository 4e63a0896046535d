"""How the stack reacts under load: scaling, in-place changes, rolling redeploys, a killed replica.

Each function drives one scenario on a live deployment with bounded background load
and returns plain figures. Waits poll the Serve REST API against deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import httpx

from bench.live import live_spec, replicas, running_pids, settle, target_replicas, update_live
from bench.load import BackgroundLoad, Target
from devstack import GALE, eventually
from gale_cli.cluster import ServeClient

# More tokens than the bundled model's context (8192).
LONG_PROMPT = "hello " * 9000


def _load_summary(load: BackgroundLoad) -> dict[str, Any]:
    summary = load.stop().summary()
    return {k: summary[k] for k in ("requests", "succeeded", "failed", "statuses", "errors")}


def scale_up_and_down(
    client: ServeClient,
    target: Target,
    *,
    up_delay: float,
    down_delay: float,
    concurrency: int,
    timeout: float = 240,
) -> dict[str, Any]:
    """Sustained load on min 1 / max 2: time to a second RUNNING replica, then back to one."""
    name = target.model
    update_live(
        client,
        name,
        min_replicas=1,
        max_replicas=2,
        scale_up_delay=up_delay,
        scale_down_delay=down_delay,
    )
    settle(client, name, 1)
    result: dict[str, Any] = {"up_delay_s": up_delay, "down_delay_s": down_delay}
    with BackgroundLoad(target, concurrency, max_duration=timeout + 60) as load:
        started = time.monotonic()
        eventually(lambda: target_replicas(client, name) == 2, timeout, "scale-up decided", 0.2)
        result["up_decided_s"] = round(time.monotonic() - started, 1)
        eventually(lambda: len(running_pids(client, name)) == 2, timeout, "second replica", 0.2)
        result["up_s"] = round(time.monotonic() - started, 1)
        result["load_during_scale_up"] = _load_summary(load)
    stopped = time.monotonic()
    eventually(lambda: target_replicas(client, name) == 1, timeout, "scale-down decided", 0.2)
    result["down_decided_s"] = round(time.monotonic() - stopped, 1)
    eventually(lambda: len(running_pids(client, name)) == 1, timeout, "back to one replica", 0.2)
    result["down_s"] = round(time.monotonic() - stopped, 1)
    return result


def _gale(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(GALE), *argv], capture_output=True, text=True, timeout=300, check=False, env=os.environ
    )
    return done, time.monotonic() - started


def in_place_changes(client: ServeClient, target: Target) -> dict[str, Any]:
    """`gale keys create` and `gale redeploy --max-length`: time until a request sees each."""
    name = target.model
    pids = running_pids(client, name)
    http = httpx.Client(base_url=target.base_url, timeout=30, trust_env=False)
    result: dict[str, Any] = {}
    try:
        started = time.monotonic()
        done, command_s = _gale("keys", "create", name, "--key-name", "bench", "--json")
        if done.returncode != 0:
            raise RuntimeError(f"gale keys create failed: {done.stderr.strip()[-500:]}")
        key = json.loads(done.stdout)["key"]
        auth = {"Authorization": f"Bearer {key}"}
        eventually(
            lambda: http.get("/models", headers=auth).status_code == 200, 30, "new key works", 0.05
        )
        result["key_created_s"] = round(time.monotonic() - started, 2)
        result["key_command_s"] = round(command_s, 2)

        spec, _ = live_spec(client, name)
        new_limit = spec.max_length + 16
        # max_tokens above the old limit is refused as such until the new limit is in place;
        # then the prompt, longer than the model's context, is what is refused. Nothing
        # is generated either way, so the probe times the change, not a generation.
        probe = {
            "model": name,
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": new_limit,
        }

        def applied() -> bool:
            response = http.post("/chat/completions", json=probe, headers=auth)
            code = response.json().get("error", {}).get("code")
            return response.status_code == 400 and code == "context_length_exceeded"

        if applied():
            raise RuntimeError("the probe sees the new limit before the change: it proves nothing")
        started = time.monotonic()
        done, command_s = _gale(
            "redeploy", name, "--max-length", str(new_limit), "--yes", "--no-input"
        )
        if done.returncode != 0:
            raise RuntimeError(f"gale redeploy failed: {done.stderr.strip()[-500:]}")
        eventually(applied, 30, "new max length applied", 0.05)
        result["parameter_changed_s"] = round(time.monotonic() - started, 2)
        result["parameter_command_s"] = round(command_s, 2)
    finally:
        http.close()
    result["same_replicas"] = running_pids(client, name) == pids
    return result


def rolling_redeploy(
    client: ServeClient, target: Target, replicas_wanted: int, concurrency: int
) -> dict[str, Any]:
    """An `args` change (engine auto <-> transformers) under load: requests lost, time taken."""
    name = target.model
    update_live(client, name, min_replicas=replicas_wanted, max_replicas=replicas_wanted)
    settle(client, name, replicas_wanted)
    spec, _ = live_spec(client, name)
    old = running_pids(client, name)
    other_engine = "transformers" if spec.engine == "auto" else "auto"
    with BackgroundLoad(target, concurrency, max_duration=600) as load:
        # Some traffic before the change, so a gap at its start would show.
        eventually(lambda: time.monotonic() - load.started > 2, 10, "load running", 0.05)
        started = time.monotonic()
        applied = update_live(client, name, engine=other_engine)
        client.wait_for_application(name, 600, since=applied.previous_deploy_time)

        def replaced() -> bool:
            states = replicas(client, name)
            pids = {r["pid"] for r in states if r.get("state") == "RUNNING"}
            return (
                len(states) == replicas_wanted and len(pids) == replicas_wanted and not (pids & old)
            )

        eventually(replaced, 600, "every replica replaced", 0.25)
        took = time.monotonic() - started
        load_result = _load_summary(load)
    return {
        "replicas": replicas_wanted,
        "change": f"engine {spec.engine} -> {other_engine} (args: rolling)",
        "redeploy_s": round(took, 1),
        **load_result,
    }


def kill_replica(client: ServeClient, target: Target, concurrency: int) -> dict[str, Any]:
    """SIGKILL one of two replicas (pid from the Serve REST API) under load."""
    name = target.model
    update_live(client, name, min_replicas=2, max_replicas=2)
    settle(client, name, 2)
    victim = min(running_pids(client, name))
    with BackgroundLoad(target, concurrency, max_duration=600) as load:
        eventually(lambda: time.monotonic() - load.started > 2, 10, "load running", 0.05)
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def back() -> bool:
            pids = running_pids(client, name)
            return len(pids) == 2 and victim not in pids

        eventually(back, 300, "replacement replica RUNNING", 0.25)
        took = time.monotonic() - started
        load_result = _load_summary(load)
    return {"killed_pid": victim, "replacement_running_s": round(took, 1), **load_result}
