"""The local stack a test session or a benchmark run brings up for itself, and how it waits.

A throwaway GALE_HOME, a local Ray head started (and stopped) through gale, the
bundled model deployed as gale deploys it, and one poll-until-deadline helper.
Development code: tests and benchmarks import it; gale itself never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from gale_cli.cluster import ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.errors import AuthError
from gale_cli.local_head import local_head_status, start_local_head, stop_local_head
from serving.keys import KeyRecord
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec

T = TypeVar("T")
BUNDLED_MODEL = "smollm2-135m-instruct"
GALE = Path(sys.executable).parent / "gale"
# Settings that would point a run at a real cluster or a person's own token.
CLEARED = ("GALE_RAY_ADDRESS", "GALE_SERVE_URL", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


class HeadInUse(RuntimeError):
    """A Ray head already answers where the run would start its own."""


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T], timeout: float, what: str, interval: float = 0.05
) -> T:
    """`eventually` for code on an event loop: sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def throwaway_home(prefix: str = "gale-home-") -> Iterator[Path]:
    """Point GALE_HOME (this process and its children) at a fresh folder, removed afterwards.

    Settings that would reach a real cluster or a person's token are unset meanwhile.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
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
def local_head(gpus: int = 0, accelerator: str | None = None) -> Iterator[ServeClient]:
    """A local Ray head started through gale for this run, stopped at the end whatever happens.

    Refuses (HeadInUse) when a head already answers: the run would otherwise deploy
    to, then stop, a cluster that is not its own.
    """
    config = ClusterConfig.from_env()
    try:
        running = local_head_status(config).running
    except AuthError:  # it answers, with a token not ours
        running = True
    if running:
        raise HeadInUse(
            f"a Ray head already answers at {config.dashboard_url}; this run starts and "
            "stops its own: stop that one (`ray stop`) or wait until its run ends"
        )
    started = time.monotonic()
    try:
        start_local_head(gpus, accelerator, config=config)
        print(f"\nlocal Ray head up in {time.monotonic() - started:.1f}s", flush=True)
        # Read again: starting the head created its token.
        with ServeClient(ClusterConfig.from_env(), timeout=120) as client:
            yield client
    finally:
        stop_local_head()
        print("local Ray head stopped", flush=True)


def deploy(
    client: ServeClient, spec: DeploymentSpec, keys: list[KeyRecord], timeout: float
) -> float:
    """Submit `spec` as gale does and wait until it is RUNNING; return the seconds it took."""
    started = time.monotonic()
    applied = client.apply_application(to_serve_application(spec, keys))
    client.wait_for_application(spec.name, timeout, since=applied.previous_deploy_time)
    return time.monotonic() - started
