"""The OpenAI-compatible app on the real engine, through an in-process HTTP client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from serving.api import ServingState
from serving.engines.base import Engine
from serving.keys import KeyRecord
from serving.replica import AppArgs, Replica
from tests.serving.conftest import BUNDLED

pytestmark = [pytest.mark.model, pytest.mark.anyio]

FRANCE = [{"role": "user", "content": "Which city is the capital of France?"}]


def events(response: httpx.Response) -> list[Any]:
    """The SSE data lines of a streamed response, JSON-decoded except the final [DONE]."""
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    data = [line.removeprefix("data: ") for line in lines]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]] + ["[DONE]"]


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI error object, after checking the status and the envelope's shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return dict(body["error"])


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert "CPU" in response.json()["device"]


async def test_models_lists_the_deployment(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["demo"]


async def test_retrieves_the_deployment_as_a_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/demo")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "demo" and response.json()["object"] == "model"
    missing = error_of(await client.get("/v1/models/gpt-4o"), 404)
    assert missing["code"] == "model_not_found" and "gpt-4o" in missing["message"]
    assert (await client.get("/v1/models/demo", headers={"Authorization": ""})).status_code == 401


async def test_chat_answers_paris(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": FRANCE, "temperature": 0, "max_tokens": 16},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "demo"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_accepts_text_parts_the_spec_model_name_and_extras(
    client: httpx.AsyncClient,
) -> None:
    parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Which city is the capital "},
                {"type": "text", "text": "of France?"},
            ],
        },
    ]
    response = await client.post(
        "/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": parts,
            "max_tokens": 16,
            "user": "someone",
            "stream_options": None,
        },
    )
    assert response.status_code == 200, response.text
    assert "Paris" in response.json()["choices"][0]["message"]["content"]
    developer = [{"role": "developer", "content": "Answer in English."}, *FRANCE]
    response = await client.post("/v1/chat/completions", json={"messages": developer})
    assert response.status_code == 200, response.text


async def test_completion(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions",
        json={"model": "demo", "prompt": "The capital of France is", "max_tokens": 5},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"]
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_matches_the_whole_answer(client: httpx.AsyncClient, route: str) -> None:
    request: dict[str, Any] = {"max_tokens": 10, "temperature": 0}
    if route.endswith("chat/completions"):
        request["messages"] = [{"role": "user", "content": "Tell me about the moon."}]
    else:
        request["prompt"] = "Once upon a time"
    whole = (await client.post(route, json=request)).json()
    streamed = await client.post(
        route, json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert streamed.status_code == 200
    items = events(streamed)
    chunks, usage, done = items[:-2], items[-2], items[-1]
    assert done == "[DONE]"
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    if route.endswith("chat/completions"):
        assert chunks[0]["object"] == "chat.completion.chunk"
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        expected = whole["choices"][0]["message"]["content"]
    else:
        assert chunks[0]["object"] == "text_completion"
        text = "".join(c["choices"][0]["text"] for c in chunks)
        expected = whole["choices"][0]["text"]
    assert len(chunks) > 3
    assert text == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


async def test_defaults_come_from_the_state(
    client: httpx.AsyncClient, state: ServingState, user_config: dict[str, Any]
) -> None:
    user_config["parameters"]["max_length"] = 5
    state.update(user_config)
    response = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Write a long poem about the sea."}]},
    )
    body = response.json()
    assert body["usage"]["completion_tokens"] <= 5
    assert body["choices"][0]["finish_reason"] == "length"
    # The default is also the limit.
    error = error_of(
        await client.post("/v1/chat/completions", json={"messages": FRANCE, "max_tokens": 6}),
        400,
    )
    assert error["param"] == "max_tokens" and "5" in error["message"]


async def test_default_stop_from_state(
    client: httpx.AsyncClient, state: ServingState, user_config: dict[str, Any]
) -> None:
    user_config["parameters"]["stop"] = ["Paris"]
    state.update(user_config)
    response = await client.post("/v1/chat/completions", json={"messages": FRANCE})
    choice = response.json()["choices"][0]
    assert "Paris" not in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequence_honoured_and_not_returned(
    client: httpx.AsyncClient, stream: bool
) -> None:
    plain = await client.post("/v1/chat/completions", json={"messages": FRANCE, "max_tokens": 16})
    full = plain.json()["choices"][0]["message"]["content"]
    assert "Paris" in full
    request = {"messages": FRANCE, "max_tokens": 16, "stop": ["Paris", "never-seen"]}
    response = await client.post("/v1/chat/completions", json={**request, "stream": stream})
    if stream:
        items = events(response)[:-1]
        text = "".join(i["choices"][0]["delta"].get("content", "") for i in items)
        finish = items[-1]["choices"][0]["finish_reason"]
    else:
        text = response.json()["choices"][0]["message"]["content"]
        finish = response.json()["choices"][0]["finish_reason"]
    assert text == full[: full.index("Paris")]
    assert finish == "stop"


async def test_concurrent_requests_keep_their_own_settings(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    prompts = ["Name a fruit.", "What is 2 plus 2?", "Say hi.", "Name a planet."]

    def request(prompt: str, **extra: Any) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}], "max_tokens": 6, **extra}

    alone = []
    for prompt in prompts:
        response = await client.post("/v1/chat/completions", json=request(prompt))
        alone.append(response.json()["choices"][0]["message"]["content"])
    together = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=request(p)) for p in prompts),
        client.post("/v1/chat/completions", json=request(prompts[0], temperature=1.8)),
        client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2}),
    )
    answers = [r.json()["choices"][0]["message"]["content"] for r in together[:4]]
    if engine.batch_invariant:
        assert answers == alone
    else:  # llama.cpp: a batch's sums run in another order, so a near tie can flip
        assert all(answers) and all(r.json()["usage"]["completion_tokens"] <= 6 for r in together)
    assert together[4].status_code == 200
    assert together[5].json()["usage"]["completion_tokens"] == 2


async def test_batch_size_changes_in_place(
    client: httpx.AsyncClient, engine: Engine, state: ServingState, user_config: dict[str, Any]
) -> None:
    assert (await client.get("/health")).json()["batch_size"] == 8
    # Args without max_num_seqs: the batch size is user_config's, applied by reconfigure.
    replica = Replica(AppArgs(model=BUNDLED, hardware="cpu"), engine, state)
    user_config["parameters"]["batch_size"] = 2
    replica.reconfigure(user_config)
    assert state.parameters.batch_size == 2 and engine.batch_size == 2
    assert (await client.get("/health")).json()["batch_size"] == 2
    responses = await asyncio.gather(
        *(client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200]


async def test_batch_size_from_args_is_not_changed_in_place(
    engine: Engine, state: ServingState, user_config: dict[str, Any]
) -> None:
    # An engine sized at start (vLLM's max_num_seqs) takes its batch size from args only.
    replica = Replica(AppArgs(model=BUNDLED, hardware="cpu", max_num_seqs=8), engine, state)
    user_config["parameters"]["batch_size"] = 2
    replica.reconfigure(user_config)
    assert state.parameters.batch_size == 2 and engine.batch_size == 8


async def test_invalid_user_config_changes_nothing(
    state: ServingState, user_config: dict[str, Any]
) -> None:
    user_config["parameters"]["temperature"] = 5
    with pytest.raises(ValueError):
        state.update(user_config)
    assert state.parameters.temperature == 0
    assert len(state.keys) == 2


LONG = "word " * 9000
CHAT_ERRORS: list[tuple[Any, int, str | None, str | None]] = [
    # (body, status, param, code)
    ({}, 400, "messages", None),
    ({"messages": []}, 400, "messages", None),
    ({"messages": "hi"}, 400, "messages", None),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", None),
    ({"messages": [{"role": "user"}]}, 400, "messages.0.content", None),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "messages.0.content", None),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "messages.0.content",
        None,
    ),
    ({"messages": FRANCE, "temperature": -0.1}, 400, "temperature", None),
    ({"messages": FRANCE, "temperature": 2.5}, 400, "temperature", None),
    ({"messages": FRANCE, "temperature": "hot"}, 400, "temperature", None),
    ({"messages": FRANCE, "temperature": True}, 400, "temperature", None),
    ({"messages": FRANCE, "top_p": 0}, 400, "top_p", None),
    ({"messages": FRANCE, "top_p": 1.5}, 400, "top_p", None),
    ({"messages": FRANCE, "top_k": 0}, 400, "top_k", None),
    ({"messages": FRANCE, "max_tokens": 0}, 400, "max_tokens", None),
    ({"messages": FRANCE, "max_tokens": 65}, 400, "max_tokens", None),
    ({"messages": FRANCE, "max_tokens": 1.5}, 400, "max_tokens", None),
    ({"messages": FRANCE, "n": 9}, 400, "n", None),
    ({"messages": FRANCE, "stop": ""}, 400, "stop", None),
    ({"messages": FRANCE, "stop": ["a", ""]}, 400, "stop", None),
    ({"messages": FRANCE, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ({"messages": FRANCE, "stream": "yes"}, 400, "stream", None),
    ({"messages": FRANCE, "model": "gpt-4"}, 404, "model", "model_not_found"),
    ({"messages": [{"role": "user", "content": LONG}]}, 400, "messages", "context_length_exceeded"),
    ([FRANCE], 400, None, None),
    ("hello", 400, None, None),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), CHAT_ERRORS)
async def test_chat_errors(
    client: httpx.AsyncClient, body: Any, status: int, param: str | None, code: str | None
) -> None:
    error = error_of(await client.post("/v1/chat/completions", json=body), status)
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "prompt", None),
        ({"prompt": 5}, "prompt", None),
        ({"prompt": "hi", "top_p": 1.01}, "top_p", None),
        ({"prompt": LONG, "max_tokens": 10}, "prompt", "context_length_exceeded"),
    ],
)
async def test_completion_errors(
    client: httpx.AsyncClient, body: Any, param: str, code: str | None
) -> None:
    error = error_of(await client.post("/v1/completions", json=body), 400)
    assert (error["param"], error["code"]) == (param, code)


async def test_top_p_of_one_and_integer_temperature_are_fine(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions", json={"prompt": "Hi", "top_p": 1, "temperature": 1, "max_tokens": 2}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("content", "message"), [(b"{not json", "not valid JSON"), (b"", "not valid JSON")]
)
async def test_invalid_json(client: httpx.AsyncClient, content: bytes, message: str) -> None:
    response = await client.post(
        "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert message in error_of(response, 400)["message"]


async def test_body_over_one_mebibyte(client: httpx.AsyncClient) -> None:
    big = json.dumps({"prompt": "x" * (1024 * 1024)})
    error = error_of(await client.post("/v1/completions", content=big), 413)
    assert error["code"] == "request_too_large"


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/v1/nothing"), 404)["code"] == "not_found"
    response = await client.get("/v1/chat/completions")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


async def test_keys(
    client: httpx.AsyncClient,
    state: ServingState,
    user_config: dict[str, Any],
    keys: dict[str, tuple[str, KeyRecord]],
) -> None:
    request = {"prompt": "Hi", "max_tokens": 1}
    main, second, other = (keys[name][0] for name in ("main", "second", "other-deployment"))
    refusals = [
        {"Authorization": ""},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer gale-wrong"},
        {"Authorization": f"Basic {main}"},
        {"Authorization": main},
        {"Authorization": f"Bearer {other}"},
    ]
    # The revoked key is refused once the new key list arrives; the other key still works.
    user_config["api_keys"] = [keys["second"][1].model_dump()]
    bodies = set()
    for headers in refusals:
        response = await client.post("/v1/completions", json=request, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        bodies.add(response.text)
    assert (await client.post("/v1/completions", json=request)).status_code == 200
    state.update(user_config)
    revoked = await client.post("/v1/completions", json=request)
    assert revoked.status_code == 401
    bodies.add(revoked.text)
    assert len(bodies) == 1
    error = error_of(revoked, 401)
    assert error["code"] == "invalid_api_key"
    assert main not in revoked.text
    for route in ("/v1/models", "/v1/chat/completions"):
        assert (
            await client.request("GET" if "models" in route else "POST", route)
        ).status_code == 401
    headers = {"Authorization": f"Bearer {second}"}
    assert (await client.post("/v1/completions", json=request, headers=headers)).status_code == 200


async def test_keys_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Authorization": ""}
    )
    assert response.status_code == 401


async def test_still_serving_after_errors(client: httpx.AsyncClient) -> None:
    for body in (b"{", b"[]", b'{"messages": []}', b'{"prompt": 1}'):
        await client.post("/v1/chat/completions", content=body)
        await client.post("/v1/completions", content=body)
    assert (await client.get("/health")).status_code == 200
    response = await client.post(
        "/v1/chat/completions", json={"messages": FRANCE, "max_tokens": 16}
    )
    assert "Paris" in response.json()["choices"][0]["message"]["content"]
