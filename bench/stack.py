"""The stack a benchmark runs on: a throwaway GALE_HOME, a local Ray head, live deployments."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gale_cli.cluster import (
    Applied,
    ClusterConfig,
    ServeClient,
    local_head_status,
    start_local_head,
    stop_local_head,
)
from gale_cli.errors import AuthError
from serving.keys import KeyRecord
from serving.serve_config import from_serve_application, to_serve_application
from serving.spec import DeploymentSpec

T = TypeVar("T")
BUNDLED_MODEL = "smollm2-135m-instruct"
# Settings that would point a run at a real cluster or a person's own token.
CLEARED = ("GALE_RAY_ADDRESS", "GALE_SERVE_URL", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def machine() -> dict[str, Any]:
    """The machine a run measured: CPU model, cores, memory, load."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def throwaway_home() -> Iterator[Path]:
    """Point GALE_HOME (this process and its children) at a fresh folder, removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="gale-bench-home-"))
    saved = {name: os.environ.get(name) for name in ("GALE_HOME", *CLEARED)}
    os.environ["GALE_HOME"] = str(home)
    for name in CLEARED:
        os.environ.pop(name, None)
    try:
        yield home
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def local_cluster() -> Iterator[ServeClient]:
    """A local Ray head started through gale for this run, stopped at the end whatever happens."""
    config = ClusterConfig.from_env()
    try:
        running = local_head_status(config).running
    except AuthError:
        running = True
    if running:
        raise RuntimeError(
            f"a Ray head already answers at {config.dashboard_url}; a benchmark needs the "
            "machine to itself (run it under `flock /tmp/gale-ray.lock`)"
        )
    started = time.monotonic()
    try:
        start_local_head(config=config)
        print(f"local Ray head up in {time.monotonic() - started:.1f}s", flush=True)
        with ServeClient(ClusterConfig.from_env(), timeout=120) as client:
            yield client
    finally:
        stop_local_head()
        print("local Ray head stopped", flush=True)


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def deploy(client: ServeClient, spec: DeploymentSpec, keys: list[KeyRecord]) -> float:
    """Submit `spec` as gale does and wait for RUNNING; return the seconds it took."""
    started = time.monotonic()
    applied = client.apply_application(to_serve_application(spec, keys))
    client.wait_for_application(spec.name, 900, since=applied.previous_deploy_time)
    return time.monotonic() - started


def live_spec(client: ServeClient, name: str) -> tuple[DeploymentSpec, list[KeyRecord]]:
    """The spec and key records of a deployment, rebuilt from the cluster's live config."""
    app = client.get_application(name)
    if app is None or not app.get("deployed_app_config"):
        raise RuntimeError(f"'{name}' is not on the cluster")
    return from_serve_application(app["deployed_app_config"])


def update_live(
    client: ServeClient, name: str, keys: list[KeyRecord] | None = None, **changes: Any
) -> Applied:
    """Change fields of a live deployment (and optionally its keys) as `gale redeploy` would."""
    spec, live_keys = live_spec(client, name)
    new = DeploymentSpec.model_validate({**spec.model_dump(), **changes})
    return client.apply_application(to_serve_application(new, live_keys if keys is None else keys))


def replicas(client: ServeClient, name: str) -> list[dict[str, Any]]:
    """The replicas of a deployment's one Serve deployment (state, pid, ...)."""
    app = client.get_application(name) or {}
    return [
        replica
        for deployment in app.get("deployments", {}).values()
        for replica in deployment.get("replicas", [])
    ]


def running_pids(client: ServeClient, name: str) -> set[int]:
    """Process ids of the RUNNING replicas."""
    return {r["pid"] for r in replicas(client, name) if r.get("state") == "RUNNING"}


def target_replicas(client: ServeClient, name: str) -> int | None:
    """How many replicas the autoscaler wants now."""
    app = client.get_application(name) or {}
    for deployment in app.get("deployments", {}).values():
        return deployment.get("target_num_replicas")
    return None


def health(serve_url: str, name: str) -> dict[str, Any] | None:
    """The deployment's /health answer, or None when it does not answer 200."""
    try:
        response = httpx.get(f"{serve_url}/{name}/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def settle(client: ServeClient, name: str, replicas_wanted: int, timeout: float = 300) -> None:
    """Wait until the app is RUNNING with exactly `replicas_wanted` replicas, all RUNNING."""

    def settled() -> bool:
        app = client.get_application(name) or {}
        states = [r.get("state") for r in replicas(client, name)]
        return (
            app.get("status") == "RUNNING"
            and len(states) == replicas_wanted
            and all(s == "RUNNING" for s in states)
        )

    wait_until(settled, timeout, f"'{name}' settled at {replicas_wanted} replicas", 0.25)
