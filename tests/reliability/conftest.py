"""Shared pieces of the reliability suite: the full/short switch, an in-process app, helpers.

`make reliability` sets GALE_RELIABILITY=full: longer loads, more examples, the fault
scenarios. `make test` runs the short form. Cluster tests use the session fixtures
`ray_cluster` and `bundled_model` from tests/conftest.py (one Ray head per session).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gale_cli.cluster import ServeClient
from serving.api import ServingState, build_api
from serving.engines.base import Engine
from serving.engines.factory import load_engine
from serving.keys import KeyRecord, generate_key

FULL = os.environ.get("GALE_RELIABILITY") == "full"
full_only = pytest.mark.skipif(not FULL, reason="full form only: make reliability")
BUNDLED = "smollm2-135m-instruct"
# Replies stay at most this long in the in-process app: valid fuzzed requests cost little.
FUZZ_MAX_LENGTH = 4


def scaled(short: float, full: float) -> float:
    """A size or duration for the short or the full form."""
    return full if FULL else short


def assert_envelope(response: httpx.Response) -> dict[str, Any]:
    """An error response is OpenAI's envelope with exactly its four fields."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if response.status_code == 401:
        assert response.headers.get("www-authenticate") == "Bearer"
    return dict(error)


def apps_snapshot(client: ServeClient) -> dict[str, Any]:
    """What a change would show on the cluster: each app's config and deploy time."""
    return {
        name: (app.get("deployed_app_config"), app.get("last_deployed_time_s"))
        for name, app in client.get_applications()["applications"].items()
    }


def home_snapshot(home: Path) -> dict[str, bytes]:
    """Every file of a GALE_HOME with its bytes (lock files excluded: they hold nothing)."""
    return {
        str(path.relative_to(home)): path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


@pytest.fixture(scope="session")
def reliability_engine() -> Iterator[Engine]:
    """The real engine on the bundled model, loaded once for the in-process API tests."""
    engine = load_engine(BUNDLED, "cpu", batch_size=8)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="session")
def fuzz_keys() -> dict[str, tuple[str, KeyRecord]]:
    """A key of the app under test and a key of another deployment."""
    return {name: generate_key(name) for name in ("mine", "other")}


@pytest.fixture
def fuzz_state(fuzz_keys: dict[str, tuple[str, KeyRecord]]) -> ServingState:
    """The deployment's in-place state: short replies, one key."""
    return ServingState(
        {
            "name": "fuzz",
            "parameters": {"temperature": 0, "max_length": FUZZ_MAX_LENGTH, "batch_size": 8},
            "api_keys": [fuzz_keys["mine"][1].model_dump()],
        }
    )


@pytest.fixture
def fuzz_app(reliability_engine: Engine, fuzz_state: ServingState) -> Any:
    """The ASGI app as a replica builds it, on the real engine."""
    return build_api(reliability_engine, fuzz_state)
