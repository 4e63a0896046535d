"""POST /v1/responses through the openai SDK, on both engines: text, streaming, tools, JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from serving.api import ServingState, build_api
from serving.engines.base import Engine
from serving.keys import KeyRecord
from tests.serving.test_api import error_of
from tests.serving.test_clients import sdk

pytestmark = [pytest.mark.model, pytest.mark.anyio]

QUESTION = "Which city is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture
def client(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> openai.AsyncOpenAI:
    return sdk(build_api(engine, state), keys["main"][0])


async def test_text_answer_as_the_chat_one(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="demo", input=QUESTION, max_output_tokens=16, temperature=0
    )
    assert response.status == "completed" and response.object == "response"
    assert "Paris" in response.output_text
    chat = await client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage is not None and response.usage.input_tokens == chat.usage.prompt_tokens  # type: ignore[union-attr]


async def test_streamed_events_rebuild_the_answer(client: openai.AsyncOpenAI) -> None:
    whole = await client.responses.create(
        model="demo", input=QUESTION, instructions="Answer briefly.", max_output_tokens=16
    )
    stream = await client.responses.create(
        model="demo",
        input=QUESTION,
        instructions="Answer briefly.",
        max_output_tokens=16,
        stream=True,
    )
    kinds, text, final = [], "", None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == f"response.{whole.status}" and final is not None
    assert text == whole.output_text == final.output_text
    assert "response.output_text.done" in kinds and "response.output_item.done" in kinds


async def test_forced_tool_call_and_its_result(client: openai.AsyncOpenAI) -> None:
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = await client.responses.create(
        model="demo", input=asked, tools=[WEATHER], tool_choice="required", max_output_tokens=40
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["weather"]
    assert "city" in json.loads(calls[0].arguments)
    # The call and its result go back as input items: the loop ends in text.
    loop: list[Any] = [
        *asked,
        {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": "weather",
            "arguments": calls[0].arguments,
        },
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
    ]
    answer = await client.responses.create(
        model="demo", input=loop, tools=[WEATHER], tool_choice="none", max_output_tokens=16
    )
    assert answer.output_text
    stream = await client.responses.create(
        model="demo",
        input=asked,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "weather"},
        max_output_tokens=40,
        stream=True,
    )
    arguments, done = "", None
    async for event in stream:
        if event.type == "response.function_call_arguments.delta":
            arguments += event.delta
        if event.type == "response.function_call_arguments.done":
            done = event.arguments
    assert done is not None and arguments == done and "city" in json.loads(done)


async def test_json_schema_text_format(client: openai.AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = await client.responses.create(
        model="demo",
        input="Name a city and its country.",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        max_output_tokens=40,
    )
    assert set(json.loads(response.output_text)) == {"city", "country"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input.0.content.0"),
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tool_choice": "auto", "tools": [WEATHER]}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_input_is_a_400_naming_it(
    engine: Engine,
    state: ServingState,
    keys: dict[str, tuple[str, KeyRecord]],
    extra: dict[str, Any],
    param: str,
) -> None:
    transport = httpx.ASGITransport(app=build_api(engine, state))
    headers = {"Authorization": f"Bearer {keys['main'][0]}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as http:
        response = await http.post("/v1/responses", json={"input": "Hi", **extra})
        assert error_of(response, 400)["param"] == param
        unkeyed = await http.post(
            "/v1/responses", json={"input": "Hi"}, headers={"Authorization": ""}
        )
        assert unkeyed.status_code == 401
