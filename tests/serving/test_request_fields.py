"""Every request field takes effect, is dropped because it changes nothing, or is refused.

docs/api.md lists the same three groups; a field refused here is named in the error's
`param` and its message says this deployment does not support it.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from serving.api import build_api
from serving.engines.base import Engine
from serving.keys import KeyRecord
from serving.openai_types import (
    CHAT_UNSUPPORTED,
    COMPLETION_UNSUPPORTED,
    DROPPED,
    MESSAGE_UNSUPPORTED,
    ChatBody,
    CompletionBody,
)
from serving.replica_state import ServingState
from tests.serving.test_api import FRANCE, error_of

pytestmark = [pytest.mark.model, pytest.mark.anyio]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
CHAT_BASE: dict[str, Any] = {"messages": FRANCE, "max_tokens": 2}
COMPLETION_BASE: dict[str, Any] = {"prompt": "Hello", "max_tokens": 2}

# (route, field, a value that asks for something gale does not do)
REFUSED: list[tuple[str, str, Any]] = [
    (CHAT, "functions", [{"name": "f"}]),
    (CHAT, "function_call", "auto"),
    (CHAT, "modalities", ["text", "audio"]),
    (CHAT, "audio", {"voice": "alloy", "format": "wav"}),
    (CHAT, "prediction", {"type": "content", "content": "x"}),
    (CHAT, "reasoning_effort", "low"),
    (CHAT, "verbosity", "low"),
    (CHAT, "web_search_options", {}),
    (COMPLETIONS, "suffix", "end"),
    (COMPLETIONS, "best_of", 2),
    (COMPLETIONS, "prompt", [1, 2, 3]),
    (COMPLETIONS, "prompt", [[1, 2]]),
]


def test_every_unsupported_field_has_a_refusal_case() -> None:
    chat = {field for route, field, _ in REFUSED if route == CHAT}
    completions = {field for route, field, _ in REFUSED if route == COMPLETIONS}
    assert chat == set(CHAT_UNSUPPORTED) and completions - {"prompt"} == set(COMPLETION_UNSUPPORTED)


def test_every_openai_field_is_declared() -> None:
    """A field the models do not declare is refused as unknown; these must all be known."""
    for model, unsupported in (
        (ChatBody, CHAT_UNSUPPORTED),
        (CompletionBody, COMPLETION_UNSUPPORTED),
    ):
        assert set(unsupported) | set(DROPPED) <= set(model.model_fields)


@pytest.mark.parametrize(("route", "field", "value"), REFUSED)
async def test_unsupported_field_is_refused_by_name(
    client: httpx.AsyncClient, route: str, field: str, value: Any
) -> None:
    base = CHAT_BASE if route == CHAT else COMPLETION_BASE
    error = error_of(await client.post(route, json={**base, field: value}), 400)
    assert error["param"] == field
    assert "not supported by this deployment" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", MESSAGE_UNSUPPORTED)
async def test_unsupported_message_part_is_refused_by_name(
    client: httpx.AsyncClient, field: str
) -> None:
    message = {"role": "assistant", "content": "Hi", field: "x"}
    body = {**CHAT_BASE, "messages": [*FRANCE, message, *FRANCE]}
    error = error_of(await client.post(CHAT, json=body), 400)
    assert error["param"] == f"messages.1.{field}"
    assert "not supported by this deployment" in error["message"]


@pytest.mark.parametrize("role", ["function"])
async def test_function_messages_are_refused(client: httpx.AsyncClient, role: str) -> None:
    message = {"role": role, "content": "42"}
    error = error_of(await client.post(CHAT, json={**CHAT_BASE, "messages": [message]}), 400)
    assert error["param"] == "messages.0.role" and "not supported" in error["message"]


@pytest.mark.parametrize(
    ("route", "field"),
    [(CHAT, "temprature"), (CHAT, "min_p"), (COMPLETIONS, "messages"), (CHAT, "prompt")],
)
async def test_unknown_field_is_refused_by_name(
    client: httpx.AsyncClient, route: str, field: str
) -> None:
    base = CHAT_BASE if route == CHAT else COMPLETION_BASE
    error = error_of(await client.post(route, json={**base, field: 1}), 400)
    assert error["param"] == field and "unknown field" in error["message"]


async def test_unknown_nested_fields_are_refused(client: httpx.AsyncClient) -> None:
    stream = {**CHAT_BASE, "stream": True, "stream_options": {"include_usage": True, "x": 1}}
    assert error_of(await client.post(CHAT, json=stream), 400)["param"] == "stream_options.x"
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache": 1}]}]
    error = error_of(await client.post(CHAT, json={**CHAT_BASE, "messages": parts}), 400)
    assert error["param"] == "messages.0.content" and "'cache'" in error["message"]


# OpenAI's own rules on what is accepted: (route, extra fields, param named)
RULES: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"stream_options": {"include_usage": True}}, "stream_options"),
    (CHAT, {"stream": False, "stream_options": {}}, "stream_options"),
    (COMPLETIONS, {"stream_options": {"include_usage": False}}, "stream_options"),
    (CHAT, {"top_logprobs": 2}, "top_logprobs"),
    (CHAT, {"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"n": 0}, "n"),
    (CHAT, {"n": 9}, "n"),
    (CHAT, {"n": 1.5}, "n"),
    (COMPLETIONS, {"n": 2, "prompt": ["a"] * 9}, "n"),
    (COMPLETIONS, {"prompt": ["a"] * 17}, "prompt"),
    (COMPLETIONS, {"prompt": ["a", 5]}, "prompt"),
    (CHAT, {"logprobs": 1}, "logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": "2"}, "top_logprobs"),
    (COMPLETIONS, {"logprobs": True}, "logprobs"),
    (COMPLETIONS, {"logprobs": -1}, "logprobs"),
    (COMPLETIONS, {"echo": 1}, "echo"),
    (COMPLETIONS, {"echo": True, "logprobs": 1}, "echo"),
    (COMPLETIONS, {"n": -1}, "n"),
    (CHAT, {"presence_penalty": 2.5}, "presence_penalty"),
    (CHAT, {"frequency_penalty": -3}, "frequency_penalty"),
    (CHAT, {"logit_bias": {"1": 101}}, "logit_bias"),
    (CHAT, {"logit_bias": {"1": 1.5}}, "logit_bias"),
    (CHAT, {"logit_bias": {"²": 1}}, "logit_bias"),
    (CHAT, {"logit_bias": {"the": 5}}, "logit_bias"),
    (COMPLETIONS, {"logit_bias": {"-1": 5}}, "logit_bias"),
    (COMPLETIONS, {"logit_bias": {"99999999": 5}}, "logit_bias"),
    (COMPLETIONS, {"logit_bias": {"9" * 5000: 5}}, "logit_bias"),
    (CHAT, {"seed": "1"}, "seed"),
    (COMPLETIONS, {"seed": 2**63}, "seed"),
    (CHAT, {"max_tokens": 2, "max_completion_tokens": 3}, "max_completion_tokens"),
    (CHAT, {"max_tokens": None, "max_completion_tokens": 0}, "max_completion_tokens"),
    (CHAT, {"max_tokens": None, "max_completion_tokens": 65}, "max_completion_tokens"),
    (CHAT, {"tools": []}, "tools"),
    (CHAT, {"response_format": {"type": "xml"}}, "response_format.type"),
    (CHAT, {"response_format": {"type": "json_schema"}}, "response_format"),
    (CHAT, {"response_format": {"type": "text", "json_schema": {"name": "x"}}}, "response_format"),
    (CHAT, {"response_format": {"type": "json_object", "x": 1}}, "response_format.x"),
    (
        CHAT,
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
        "response_format.json_schema.name",
    ),
    (
        CHAT,
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
        "response_format.json_schema.schema",
    ),
    (COMPLETIONS, {"logprobs": 6}, "logprobs"),
    (COMPLETIONS, {"best_of": 0}, "best_of"),
    (COMPLETIONS, {"prompt": []}, "prompt"),
    (CHAT, {"user": 5}, "user"),
    (CHAT, {"metadata": {"k": 1}}, "metadata.k"),
    (CHAT, {"store": "yes"}, "store"),
]


@pytest.mark.parametrize(("route", "extra", "param"), RULES)
async def test_openai_rules_on_accepted_fields(
    client: httpx.AsyncClient, route: str, extra: dict[str, Any], param: str
) -> None:
    base = CHAT_BASE if route == CHAT else COMPLETION_BASE
    error = error_of(await client.post(route, json={**base, **extra}), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


# Values that ask for nothing beyond what gale does, and fields that change nothing.
NEUTRAL: dict[str, Any] = {
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "seed": None,
    "user": "someone",
    "metadata": {"team": "search"},
    "store": False,
    "service_tier": "auto",
    "prompt_cache_key": "k",
    "safety_identifier": "u-1",
}


async def test_neutral_values_and_dropped_fields_are_accepted(client: httpx.AsyncClient) -> None:
    chat = {
        **CHAT_BASE,
        **NEUTRAL,
        "tools": None,
        "tool_choice": None,
        "response_format": {"type": "text"},
        "logprobs": False,
        "modalities": ["text"],
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
        "messages": [*FRANCE, {"role": "assistant", "content": "Paris.", "refusal": None}],
    }
    response = await client.post(CHAT, json=chat)
    assert response.status_code == 200, response.text
    completion = {**COMPLETION_BASE, **NEUTRAL, "echo": False, "best_of": 1, "suffix": ""}
    response = await client.post(COMPLETIONS, json={**completion, "prompt": ["Hello"]})
    assert response.status_code == 200, response.text


async def test_the_sdk_reports_the_refused_field(
    engine: Engine, state: ServingState, keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_api(engine, state)), base_url="http://test/v1"
    )
    client = openai.AsyncOpenAI(
        api_key=keys["main"][0], base_url="http://test/v1", http_client=http
    )
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="demo", messages=FRANCE, max_tokens=2, functions=[{"name": "f"}]
        )
    assert refused.value.param == "functions"
    assert "not supported by this deployment" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        await client.completions.create(model="demo", prompt="Hi", max_tokens=2, best_of=2)
    assert refused.value.param == "best_of"
    # What the SDK sends by default passes, streamed or not, chat or completions.
    reply = await client.completions.create(model="demo", prompt="Hi", max_tokens=2)
    assert reply.choices[0].text is not None
    stream = await client.completions.create(model="demo", prompt="Hi", max_tokens=2, stream=True)
    assert [chunk async for chunk in stream]


async def test_max_completion_tokens_bounds_the_answer(client: httpx.AsyncClient) -> None:
    request = {"messages": FRANCE, "temperature": 0}
    newer = await client.post(CHAT, json={**request, "max_completion_tokens": 3})
    both = await client.post(CHAT, json={**request, "max_completion_tokens": 3, "max_tokens": 3})
    older = await client.post(CHAT, json={**request, "max_tokens": 3})
    answers = [response.json() for response in (newer, both, older)]
    assert all(answer["usage"]["completion_tokens"] == 3 for answer in answers), answers
    assert len({answer["choices"][0]["message"]["content"] for answer in answers}) == 1
