"""Logprobs, several choices (`n`), completions `echo` and list prompts, on both engines."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from serving.engines.base import Engine
from tests.serving.test_api import FRANCE

pytestmark = [pytest.mark.model, pytest.mark.anyio]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GREEDY: dict[str, Any] = {"max_tokens": 6, "temperature": 0}


async def ok(client: httpx.AsyncClient, route: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(route, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def events(client: httpx.AsyncClient, route: str, body: dict[str, Any]) -> list[Any]:
    async with client.stream("POST", route, json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


async def test_chat_logprobs_in_openai_shape(client: httpx.AsyncClient) -> None:
    body = {"messages": FRANCE, **GREEDY, "logprobs": True, "top_logprobs": 3}
    choice = (await ok(client, CHAT, body))["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    assert "".join(entry["token"] for entry in content) == choice["message"]["content"]
    for entry in content:
        assert entry["logprob"] <= 0 and bytes(entry["bytes"]) == entry["token"].encode()
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and all(set(t) == {"token", "logprob", "bytes"} for t in tops)
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert tops[0]["token"] == entry["token"]
        assert math.isclose(tops[0]["logprob"], entry["logprob"], abs_tol=1e-3)
    # Without top_logprobs: each token's own only.
    plain = await ok(client, CHAT, {**body, "top_logprobs": None})
    assert all(e["top_logprobs"] == [] for e in plain["choices"][0]["logprobs"]["content"])
    assert (await ok(client, CHAT, {"messages": FRANCE, **GREEDY}))["choices"][0][
        "logprobs"
    ] is None


async def test_chat_logprobs_stream_as_the_whole_answer(client: httpx.AsyncClient) -> None:
    body = {"messages": FRANCE, **GREEDY, "logprobs": True, "top_logprobs": 2}
    whole = (await ok(client, CHAT, body))["choices"][0]["logprobs"]["content"]
    streamed = [
        entry
        for event in await events(client, CHAT, body)
        for choice in event["choices"]
        if choice["logprobs"]
        for entry in choice["logprobs"]["content"]
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in whole]
    for mine, theirs in zip(streamed, whole, strict=True):
        assert math.isclose(mine["logprob"], theirs["logprob"], abs_tol=1e-3)


async def test_completions_logprobs_in_openai_shape(client: httpx.AsyncClient) -> None:
    body = {"prompt": "The capital of France is", **GREEDY, "logprobs": 2}
    choice = (await ok(client, COMPLETIONS, body))["choices"][0]
    scores = choice["logprobs"]
    assert set(scores) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(scores["tokens"]) == choice["text"]
    assert len(scores["token_logprobs"]) == len(scores["tokens"]) == len(scores["text_offset"])
    assert scores["text_offset"][0] == 0
    for token, start, end in zip(
        scores["tokens"], scores["text_offset"], [*scores["text_offset"][1:], None], strict=True
    ):
        assert choice["text"][start:end] == token
    assert all(len(top) <= 2 and top for top in scores["top_logprobs"])
    streamed = await events(client, COMPLETIONS, body)
    offsets = [
        o
        for e in streamed
        for c in e["choices"]
        if c["logprobs"]
        for o in c["logprobs"]["text_offset"]
    ]
    assert offsets == scores["text_offset"]


async def test_n_choices_whole_and_streamed(client: httpx.AsyncClient, engine: Engine) -> None:
    body = {"messages": FRANCE, "max_tokens": 8, "temperature": 1.5, "seed": 7, "n": 3}
    answer = await ok(client, CHAT, body)
    texts = [choice["message"]["content"] for choice in answer["choices"]]
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2]
    assert len(set(texts)) > 1, texts  # each choice samples on its own
    assert answer["usage"]["completion_tokens"] >= 3
    again = await ok(client, CHAT, body)
    # The same seeds draw the same numbers, but where an engine's logits depend on what
    # shares the batch (llama.cpp) only the shape of the answers can be compared.
    same = engine.batch_invariant
    assert len(again["choices"]) == 3
    assert not same or [c["message"]["content"] for c in again["choices"]] == texts
    streamed: dict[int, str] = {}
    finished = set()
    for event in await events(client, CHAT, body):
        for choice in event["choices"]:
            streamed[choice["index"]] = streamed.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert finished == {0, 1, 2} and all(streamed[i] for i in range(3))
    assert not same or [streamed[i] for i in range(3)] == texts


async def test_list_prompts_and_echo(client: httpx.AsyncClient) -> None:
    prompts = ["The capital of France is", "One, two, three,"]
    body = {"prompt": prompts, **GREEDY, "n": 2, "echo": True}
    answer = await ok(client, COMPLETIONS, body)
    choices = answer["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for i, choice in enumerate(choices):
        alone = await ok(client, COMPLETIONS, {"prompt": prompts[i // 2], **GREEDY})
        assert choice["text"] == prompts[i // 2] + alone["choices"][0]["text"]
    one = await ok(client, COMPLETIONS, {"prompt": prompts[0], **GREEDY})
    two = await ok(client, COMPLETIONS, {"prompt": prompts[1], **GREEDY})
    assert answer["usage"]["prompt_tokens"] == (
        one["usage"]["prompt_tokens"] + two["usage"]["prompt_tokens"]
    )
    streamed: dict[int, str] = {}
    for event in await events(client, COMPLETIONS, body):
        for choice in event["choices"]:
            streamed[choice["index"]] = streamed.get(choice["index"], "") + choice["text"]
    assert [streamed[i] for i in range(4)] == [c["text"] for c in choices]


async def test_n_forced_tool_calls(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    body = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [tool],
        "tool_choice": "required",
        "max_tokens": 40,
        "n": 2,
    }
    answer = await ok(client, CHAT, body)
    for choice in answer["choices"]:
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]["function"]
        assert call["name"] == "weather" and "city" in json.loads(call["arguments"])
