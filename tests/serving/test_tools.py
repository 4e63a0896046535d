"""Tool calls on both engines: forced calls, streamed calls, a tool loop, and refusals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from serving.api import build_api
from serving.engines.base import Engine
from serving.keys import KeyRecord
from serving.replica_state import ServingState
from tests.serving.test_api import error_of

pytestmark = [pytest.mark.model, pytest.mark.anyio]

CHAT = "/v1/chat/completions"
WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def sdk(engine: Engine, state: ServingState, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(engine, state)), base_url="http://test/v1"
    )
    return openai.AsyncOpenAI(api_key=key, base_url="http://test/v1", http_client=http)


@pytest.mark.parametrize("choice", ["required", NAMED])
async def test_a_forced_call_fits_the_tool(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]], choice: Any
) -> None:
    client = sdk(engine, state, keys["main"][0])
    reply = await client.chat.completions.create(
        model="demo", messages=ASK, tools=[WEATHER], tool_choice=choice, max_tokens=64
    )
    choice_ = reply.choices[0]
    assert choice_.finish_reason == "tool_calls"
    assert choice_.message.content is None
    [call] = choice_.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


async def test_required_with_several_tools_calls_one_of_them(client: httpx.AsyncClient) -> None:
    body = {"messages": ASK, "tools": [TIME, WEATHER], "tool_choice": "required", "max_tokens": 64}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    tool = {"get_weather": WEATHER, "get_time": TIME}[call["function"]["name"]]
    jsonschema.validate(json.loads(call["function"]["arguments"]), tool["function"]["parameters"])


async def test_a_streamed_call_assembles_in_the_sdk(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    client = sdk(engine, state, keys["main"][0])
    stream = await client.chat.completions.create(
        model="demo", messages=ASK, tools=[WEATHER], tool_choice=NAMED, max_tokens=64, stream=True
    )
    ids, names, arguments, finish = set(), set(), "", None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            ids.add(call.id) if call.id else None
            if call.function and call.function.name:
                names.add(call.function.name)
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and names == {"get_weather"} and len(ids) == 1
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)
    # The SDK's own stream helper assembles the same call.
    async with client.chat.completions.stream(
        model="demo", messages=ASK, tools=[WEATHER], tool_choice=NAMED, max_tokens=64
    ) as helper:
        final = await helper.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(arguments)


async def test_a_tool_loop_gets_an_answer(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    client = sdk(engine, state, keys["main"][0])
    first = await client.chat.completions.create(
        model="demo", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=64
    )
    [call] = first.choices[0].message.tool_calls or []
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    # What LangChain sends next: the same tools, no tool_choice would be 'auto'; 'none'
    # asks for text.
    answer = await client.chat.completions.create(
        model="demo", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=32
    )
    assert answer.choices[0].message.content
    assert answer.choices[0].message.tool_calls is None
    # An empty content on the assistant's call is accepted too.
    history[1]["content"] = ""
    again = await client.chat.completions.create(model="demo", messages=history, max_tokens=8)
    assert again.choices[0].message.content is not None


# (extra fields, param named, words in the message)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice", "'required'"),
    ({"tools": [WEATHER]}, "tool_choice", "'required'"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "'nope'",
    ),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name", ""),
    ({"tools": [{"type": "retrieval"}]}, "tools.0.type", ""),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", ""),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}
            ],
            "tool_choice": "required",
        },
        "tools",
        "not a JSON schema",
    ),
]


@pytest.mark.parametrize(("extra", "param", "words"), BAD)
async def test_bad_tool_requests_are_refused(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(await client.post(CHAT, json={"messages": ASK, "max_tokens": 8, **extra}), 400)
    assert error["param"] == param and words in error["message"]


# (a message, param named)
BAD_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"role": "tool", "content": "21"}, "messages.1"),
    ({"role": "user", "content": "x", "tool_call_id": "call_1"}, "messages.1"),
    ({"role": "assistant", "content": None}, "messages.1.content"),
    ({"role": "user", "content": "x", "tool_calls": []}, "messages.1"),
    ({"role": "function", "content": "21"}, "messages.1.role"),
]


@pytest.mark.parametrize(("message", "param"), BAD_MESSAGES)
async def test_bad_tool_messages_are_refused(
    client: httpx.AsyncClient, message: dict[str, Any], param: str
) -> None:
    body = {"messages": [*ASK, message], "max_tokens": 8}
    assert error_of(await client.post(CHAT, json=body), 400)["param"] == param
