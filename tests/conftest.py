"""Fixtures shared by every test: a private GALE_HOME, one local Ray head, one loaded model.

The Ray head and the model start lazily, only when a test asks for them, and
once per session: `ray start` takes seconds and loading the model about 15 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from gale_cli.cluster import (
    Applied,
    ClusterConfig,
    ServeClient,
    local_head_status,
    start_local_head,
    stop_local_head,
)
from gale_cli.errors import AuthError
from serving.keys import KeyRecord, generate_key
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec

# Settings that would point tests at a real cluster or a person's own token.
_CLEARED = ("GALE_RAY_ADDRESS", "GALE_SERVE_URL", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_TEST_HOME: str | None = None

BUNDLED_MODEL = "smollm2-135m-instruct"
DEPLOY_TIMEOUT_S = 600
# The session head declares logical GPUs, so GPU profiles are placed for real on this machine.
HEAD_GPUS, HEAD_ACCELERATOR = 4, "A10G"
GALE = Path(sys.executable).parent / "gale"
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """Give the whole session (and the Ray head it starts) a throwaway GALE_HOME."""
    global _TEST_HOME
    _TEST_HOME = tempfile.mkdtemp(prefix="gale-test-home-")
    os.environ["GALE_HOME"] = _TEST_HOME
    for name in _CLEARED:
        os.environ.pop(name, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run tests that restart the cluster last: every other cluster test keeps its fixtures."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's GALE_HOME."""
    if _TEST_HOME:
        shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ServeClient]:
    """A local Ray head started through gale_cli.cluster, stopped at the end whatever happens."""
    config = ClusterConfig.from_env()
    try:
        already = local_head_status(config).running
    except AuthError:
        already = True
    if already:
        # Not ours to stop: tests would otherwise deploy to, then kill, someone's cluster.
        pytest.fail(
            f"a Ray head already answers at {config.dashboard_url}; stop it (`ray stop`) "
            "so the tests can start their own",
            pytrace=False,
        )
    started = time.monotonic()
    try:
        start_local_head(HEAD_GPUS, HEAD_ACCELERATOR, config=config)
        print(f"\nlocal Ray head up in {time.monotonic() - started:.1f}s")
        with ServeClient(ClusterConfig.from_env(), timeout=120) as client:
            yield client
    finally:
        stop_local_head()


@dataclass(frozen=True)
class Deployed:
    """The bundled model deployed on the test cluster, and how to reach it."""

    spec: DeploymentSpec
    key: str
    record: KeyRecord
    base_url: str
    client: ServeClient

    @property
    def name(self) -> str:
        """The deployment (and application) name."""
        return self.spec.name

    def apply(self, records: list[KeyRecord]) -> Applied:
        """Re-apply this deployment's config with these key records, as gale would."""
        return self.client.apply_application(to_serve_application(self.spec, records))


@pytest.fixture(scope="session")
def bundled_model(ray_cluster: ServeClient) -> Deployed:
    """The bundled model on the `cpu` profile at temperature 0, deployed once per session."""
    spec = DeploymentSpec(
        name="smol", model=BUNDLED_MODEL, hardware="cpu", temperature=0, max_length=64
    )
    key, record = generate_key("tests")
    started = time.monotonic()
    applied = ray_cluster.apply_application(to_serve_application(spec, [record]))
    ray_cluster.wait_for_application(
        spec.name, DEPLOY_TIMEOUT_S, since=applied.previous_deploy_time
    )
    print(f"\n{spec.name}: PUT → RUNNING in {time.monotonic() - started:.1f}s")
    base_url = ray_cluster.config.serve_url + f"/{spec.name}/v1"
    return Deployed(spec, key, record, base_url, ray_cluster)


def gale(
    *args: str, env: dict[str, str] | None = None, timeout: float = DEPLOY_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run the real `gale` CLI as a script would: no terminal, the session's environment."""
    return subprocess.run(
        [str(GALE), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def eventually(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns a truthy value, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def delete_after(ray_cluster: ServeClient) -> Iterator[Callable[..., str]]:
    """Register deployment names; each is deleted after the test.

    With `wait_removed` (the default) the teardown also waits until the cluster has
    let go of it, so the next test finds the resources free. A replica that was never
    placed holds nothing, and Serve stops it only after the graceful-shutdown
    timeout (60 s): pass `wait_removed=False` for those.
    """
    names: list[tuple[str, bool]] = []

    def register(name: str, *, wait_removed: bool = True) -> str:
        names.append((name, wait_removed))
        return name

    yield register
    for name, wait_removed in names:
        gale("delete", name, "--yes", timeout=120)
        if wait_removed:
            ray_cluster.wait_for_removal(name, 120, poll_interval=0.2)
