"""Sampling fields that take effect on both engines: seed, penalties and logit_bias."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from serving.engines.base import Engine

pytestmark = [pytest.mark.model, pytest.mark.anyio]

COMPLETIONS = "/v1/completions"
STORY: dict[str, Any] = {
    "prompt": "Once upon a time, in a small village,",
    "max_tokens": 12,
    "temperature": 1.2,
    "top_p": 1,
}


async def text_of(client: httpx.AsyncClient, request: dict[str, Any]) -> str:
    response = await client.post(COMPLETIONS, json=request)
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["text"]
    return text


async def test_same_seed_same_answer_even_when_sampling(client: httpx.AsyncClient) -> None:
    first = await text_of(client, {**STORY, "seed": 1})
    assert await text_of(client, {**STORY, "seed": 1}) == first
    others = [await text_of(client, {**STORY, "seed": seed}) for seed in (2, 3, 4)]
    assert any(other != first for other in others), (first, others)


CAPITAL: dict[str, Any] = {"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}


async def test_a_negative_logit_bias_rules_out_the_greedy_token(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    first = await text_of(client, CAPITAL)
    prompt = engine.encode_text(CAPITAL["prompt"])
    extended = engine.encode_text(CAPITAL["prompt"] + first)
    assert extended[: len(prompt)] == prompt and len(extended) == len(prompt) + 1
    token = extended[-1]
    assert await text_of(client, {**CAPITAL, "logit_bias": {str(token): 0}}) == first
    banned = await text_of(client, {**CAPITAL, "logit_bias": {str(token): -100}})
    assert banned != first
    # A strong positive bias makes a token the greedy choice.
    forced = engine.encode_text(CAPITAL["prompt"] + " banana")[len(prompt)]
    assert await text_of(client, {**CAPITAL, "logit_bias": {str(forced): 100}}) == " banana"


ECHO: dict[str, Any] = {
    "prompt": "Repeat after me: hello hello hello",
    "max_tokens": 16,
    "temperature": 0,
}


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
async def test_penalties_change_a_repeating_greedy_answer(
    client: httpx.AsyncClient, penalty: str
) -> None:
    plain = await text_of(client, ECHO)
    assert plain.count("hello") >= 8, plain  # the greedy answer repeats itself
    penalised = await text_of(client, {**ECHO, penalty: 2})
    assert penalised.count("hello") < plain.count("hello") / 2, (plain, penalised)
    assert await text_of(client, {**ECHO, penalty: 0}) == plain
