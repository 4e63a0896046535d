"""Sampling fields that take effect on both engines: seed, penalties and logit_bias."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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
