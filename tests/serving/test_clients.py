"""The app as real clients see it: the openai SDK, and a stream that fails half-way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import instructor
import openai
import pytest
from pydantic import BaseModel

from serving.api import ServingState, build_api
from serving.engines.base import Chunk, Engine, SamplingParams
from serving.engines.errors import EngineError
from serving.keys import KeyRecord
from tests.serving.wrapped import Wrapped

pytestmark = [pytest.mark.model, pytest.mark.anyio]


def sdk(app: Any, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/v1")
    return openai.AsyncOpenAI(api_key=key, base_url="http://test/v1", http_client=http)


async def test_openai_sdk(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    app = build_api(engine, state)
    client = sdk(app, keys["main"][0])
    question = [{"role": "user", "content": "Which city is the capital of France?"}]
    reply = await client.chat.completions.create(model="demo", messages=question, max_tokens=16)
    assert "Paris" in (reply.choices[0].message.content or "")
    pieces = []
    stream = await client.chat.completions.create(
        model="demo", messages=question, max_tokens=16, stream=True
    )
    async for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == reply.choices[0].message.content
    assert [m.id async for m in client.models.list()] == ["demo"]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="demo", messages=question, temperature=3)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4", messages=question)
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, keys["other-deployment"][0]).models.list()


class City(BaseModel):
    name: str
    country: str


async def test_instructor_default_mode_gets_a_valid_object(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    # instructor's default mode asks for a forced call of a tool whose parameters are
    # the model's schema, and validates the arguments into the model.
    client = instructor.from_openai(sdk(build_api(engine, state), keys["main"][0]))
    city = await client.chat.completions.create(
        model="demo",
        response_model=City,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        max_tokens=48,
        max_retries=0,
    )
    assert isinstance(city, City) and city.name and city.country


class FailingHalfway(Wrapped):
    """The real engine, except that every stream breaks after its first two pieces."""

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        count = 0
        async for chunk in self.inner.stream(prompt_ids, params):
            yield chunk
            count += 1
            if count == 2:
                raise EngineError("the device went away")


async def test_error_after_the_stream_started(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    app = build_api(FailingHalfway(engine), state)
    headers = {"Authorization": f"Bearer {keys['main'][0]}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    ) as client:
        body = {"prompt": "Once upon a time", "max_tokens": 20, "stream": True}
        response = await client.post("/v1/completions", json=body)
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.text.split("\n") if line]
        assert lines[-1] == "[DONE]"
        error = json.loads(lines[-2])["error"]
        # The engine's own words go to the replica log, not to the client.
        assert error["type"] == "server_error" and "device went away" not in error["message"]
        assert len(lines) == 4  # two pieces, the error, [DONE]
        # Not streamed, the same failure is a 503 in the envelope; the app keeps serving.
        failed = await client.post("/v1/completions", json={**body, "stream": False})
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "engine_error"
        assert (await client.get("/health")).status_code == 200
