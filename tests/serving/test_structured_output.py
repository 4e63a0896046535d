"""Structured output on both engines: answers constrained to JSON and to a JSON schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest

from serving.api import build_api
from serving.engines.base import Engine
from serving.keys import KeyRecord
from serving.replica_state import ServingState
from tests.serving.test_api import error_of, events

pytestmark = [pytest.mark.model, pytest.mark.anyio]

CHAT = "/v1/chat/completions"
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """A response_format asking for `schema`, as the openai SDK sends it."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }


async def test_json_schema_answer_validates(client: httpx.AsyncClient) -> None:
    body = {
        "messages": CAPITAL,
        "max_tokens": 64,
        "response_format": json_schema_format(CITY_SCHEMA),
    }
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    answer = json.loads(choice["message"]["content"])
    jsonschema.validate(answer, CITY_SCHEMA)
    # Compact: no whitespace the model could have spent tokens on.
    assert "\n" not in choice["message"]["content"] and ": " not in choice["message"]["content"]


async def test_json_schema_answer_streams(client: httpx.AsyncClient) -> None:
    body = {
        "messages": CAPITAL,
        "max_tokens": 64,
        "stream": True,
        "response_format": json_schema_format(CITY_SCHEMA),
    }
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    chunks = events(response)[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(text), CITY_SCHEMA)


async def test_json_object_answer_parses(client: httpx.AsyncClient) -> None:
    body = {"messages": CAPITAL, "max_tokens": 64, "response_format": {"type": "json_object"}}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"]), dict)


class Capital(pydantic.BaseModel):
    city: str
    country: str


async def test_the_sdk_parses_into_a_pydantic_model(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(engine, state)), base_url="http://test/v1"
    )
    client = openai.AsyncOpenAI(
        api_key=keys["main"][0], base_url="http://test/v1", http_client=http
    )
    reply = await client.chat.completions.parse(
        model="demo", messages=CAPITAL, max_tokens=64, response_format=Capital
    )
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Capital) and parsed.city


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"type": "object", "properties": 3},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
    ],
)
async def test_a_schema_that_is_not_a_schema_is_refused(
    client: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    body = {"messages": CAPITAL, "max_tokens": 8, "response_format": json_schema_format(schema)}
    error = error_of(await client.post(CHAT, json=body), 400)
    assert error["param"] == "response_format"
    assert "not a JSON schema" in error["message"]
