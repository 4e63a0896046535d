"""Bad input to the API: every listed case, then a property-based sweep of request bodies.

The app publishes no OpenAPI document (`openapi_url=None`) and reads raw bodies itself,
so the sweep's strategies follow the OpenAI request schema field by field: valid values,
boundary values and arbitrary JSON, invalid JSON, other content types, other keys.
Properties: never a 5xx, every error in OpenAI's envelope, a bad key is always 401,
streams end in [DONE] without error events, and the server is healthy afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api import ServingState
from serving.keys import KeyRecord, generate_key
from tests.conftest import Deployed
from tests.reliability.conftest import FUZZ_MAX_LENGTH, assert_envelope, scaled

pytestmark = pytest.mark.model

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "Hello"}]

json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _field(*specific: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(*specific, json_value)


part = st.fixed_dictionaries(
    {},
    optional={
        "type": _field(st.sampled_from(["text", "image_url"])),
        "text": _field(st.text(max_size=12)),
    },
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": _field(st.sampled_from(["user", "system", "assistant", "developer", "tool", ""])),
        "content": _field(st.text(max_size=30), st.lists(part, max_size=2)),
        "name": st.sampled_from([None, None, None, "bob"]),
    },
)
COMMON = {
    "model": _field(st.sampled_from(["fuzz", "smol", "nope", ""])),
    "temperature": _field(st.floats(-1, 3), st.sampled_from([0, 2, -0.0001, 2.0001, "0.5", True])),
    "top_p": _field(st.sampled_from([0, 1, 0.5, 1.01, -1, "1"])),
    "top_k": _field(st.sampled_from([0, 1, 50, -3, 1.5])),
    "max_tokens": _field(st.integers(-2, FUZZ_MAX_LENGTH + 2)),
    "n": _field(st.sampled_from([1, 2, 0, None])),
    "stop": _field(st.sampled_from(["", "x", ["a"], ["", "b"], ["1", "2", "3", "4", "5"]])),
    "stream": _field(st.booleans()),
    "stream_options": _field(
        st.none(), st.fixed_dictionaries({}, optional={"include_usage": _field(st.booleans())})
    ),
    "user": st.text(max_size=5),
}
chat_body = st.fixed_dictionaries(
    {},
    optional={
        **COMMON,
        "messages": _field(st.lists(message, max_size=3)),
        "max_completion_tokens": _field(st.integers(-1, FUZZ_MAX_LENGTH + 1)),
        "logprobs": _field(st.booleans()),
        "top_logprobs": _field(st.integers(-1, 21)),
    },
)
completion_body = st.fixed_dictionaries(
    {},
    optional={
        **COMMON,
        "prompt": _field(st.text(max_size=30), st.lists(st.text(max_size=8), max_size=2)),
        "logprobs": _field(st.integers(-1, 6)),
        "echo": _field(st.booleans()),
    },
)
# Most fuzzed bodies carry some refused field: these are valid, so the sweep reaches the model.
valid_chat_body = st.fixed_dictionaries(
    {"messages": st.lists(st.just(HELLO[0]), min_size=1, max_size=2)},
    optional={
        "max_tokens": st.integers(1, FUZZ_MAX_LENGTH),
        "temperature": st.floats(0, 2),
        "stream": st.booleans(),
        "n": st.just(1),
        "user": st.text(max_size=5),
    },
)
AUTH = ["mine", "mine", "mine", "none", "wrong", "other", "basic", "empty-bearer"]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One HTTP request: method, path, auth choice, and a body (JSON, raw bytes, or none)."""
    kind = draw(
        st.sampled_from(["chat", "chat", "chat", "completions", "completions", "raw", "other"])
    )
    auth = draw(st.sampled_from(AUTH))
    if kind == "chat":
        body = draw(chat_body | valid_chat_body | json_value)
        return {"method": "POST", "path": CHAT, "auth": auth, "json": body}
    if kind == "completions":
        body = draw(completion_body | json_value)
        return {"method": "POST", "path": COMPLETIONS, "auth": auth, "json": body}
    if kind == "raw":
        path = draw(st.sampled_from([CHAT, COMPLETIONS]))
        content = draw(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
        ctype = draw(
            st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
        )
        return {"method": "POST", "path": path, "auth": auth, "content": content, "ctype": ctype}
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = draw(
        st.sampled_from(["/v1/models", "/health", CHAT, "/v1/nothing", "/", "/v1/models/x"])
    )
    return {"method": method, "path": path, "auth": auth}


def headers_for(auth: str, keys: dict[str, str]) -> dict[str, str]:
    """The Authorization header for an auth choice."""
    return {
        "mine": {"Authorization": f"Bearer {keys['mine']}"},
        "none": {},
        "wrong": {"Authorization": "Bearer gale-" + "x" * 43},
        "other": {"Authorization": f"Bearer {keys['other']}"},
        "basic": {"Authorization": f"Basic {keys['mine']}"},
        "empty-bearer": {"Authorization": "Bearer"},
    }[auth]


def check(request: dict[str, Any], response: httpx.Response) -> None:
    """The properties every response must have."""
    assert response.status_code < 500, (request, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert_envelope(response)
    protected = request["path"] in (CHAT, COMPLETIONS, "/v1/models")
    allowed = (request["method"], request["path"]) in (
        ("POST", CHAT),
        ("POST", COMPLETIONS),
        ("GET", "/v1/models"),
    )
    if protected and allowed and request["auth"] != "mine":
        assert response.status_code == 401, (request, response.text[:300])
    if response.status_code == 200 and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    ):
        data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
        assert data and data[-1] == "[DONE]", response.text[-300:]
        assert not any("error" in json.loads(item) for item in data[:-1]), response.text[-500:]


def send(
    client: Any, request: dict[str, Any], keys: dict[str, str], prefix: str = ""
) -> httpx.Response:
    """Send one generated request with a sync client (TestClient or httpx.Client)."""
    headers = headers_for(request["auth"], keys)
    kwargs: dict[str, Any] = {}
    if "json" in request:
        # Non-finite floats are not JSON: send them as Python writes them (invalid JSON).
        kwargs["content"] = json.dumps(request["json"]).encode()
        headers["Content-Type"] = "application/json"
    elif "content" in request:
        kwargs["content"] = request["content"]
        headers["Content-Type"] = request["ctype"]
    return client.request(request["method"], prefix + request["path"], headers=headers, **kwargs)


def test_property_sweep_in_process(
    fuzz_app: Any, fuzz_keys: dict[str, tuple[str, KeyRecord]]
) -> None:
    keys = {name: value[0] for name, value in fuzz_keys.items()}
    seen: dict[int, int] = {}
    with TestClient(fuzz_app, raise_server_exceptions=False) as client:

        @settings(
            max_examples=int(scaled(300, 3000)),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(requests())
        def sweep(request: dict[str, Any]) -> None:
            response = send(client, request, keys)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            check(request, response)

        sweep()
        print(f"\nstatuses seen: {dict(sorted(seen.items()))}")
        # The sweep reached the model, not only the validators.
        assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0 and seen.get(401, 0) > 0
        assert client.get("/health").status_code == 200
        ok = client.post(
            CHAT,
            json={"messages": HELLO, "max_tokens": 2},
            headers={"Authorization": f"Bearer {keys['mine']}"},
        )
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.cluster
def test_property_sweep_through_serve(bundled_model: Deployed) -> None:
    """The same sweep through Ray Serve's proxy and the real replica."""
    keys = {"mine": bundled_model.key, "other": generate_key("elsewhere")[0]}
    prefix = f"/{bundled_model.name}"
    seen: dict[int, int] = {}
    with httpx.Client(
        base_url=bundled_model.client.config.serve_url, timeout=120, trust_env=False
    ) as http:

        @settings(
            max_examples=int(scaled(60, 600)),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(requests())
        def sweep(request: dict[str, Any]) -> None:
            body = request.get("json")
            # The deployment allows 64 tokens: keep valid requests short here.
            if isinstance(body, dict) and "max_tokens" not in body:
                body["max_tokens"] = 2
            response = send(http, request, keys, prefix)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            check(request, response)

        sweep()
        print(f"\nstatuses seen through Serve: {dict(sorted(seen.items()))}")
        assert http.get(f"{prefix}/health").status_code == 200
        ok = http.post(
            f"{prefix}/v1{CHAT[3:]}",
            json={"messages": HELLO, "max_tokens": 2},
            headers={"Authorization": f"Bearer {bundled_model.key}"},
        )
        assert ok.status_code == 200, ok.text


LONG_PROMPT = "hello " * 9000
CASES: list[tuple[str, str, Any, int, str | None]] = [
    # (what, path, body (bytes or JSON), status, error code or param expected)
    ("invalid JSON", CHAT, b"{", 400, "invalid_json"),
    ("not an object", CHAT, b"[1, 2]", 400, None),
    ("missing messages", CHAT, {}, 400, "messages"),
    ("empty messages", CHAT, {"messages": []}, 400, "messages"),
    ("malformed message", CHAT, {"messages": [{"role": "user"}]}, 400, "messages.0.content"),
    (
        "unknown role",
        CHAT,
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    ("temperature below 0", CHAT, {"messages": HELLO, "temperature": -0.1}, 400, "temperature"),
    ("temperature above 2", CHAT, {"messages": HELLO, "temperature": 2.1}, 400, "temperature"),
    (
        "temperature not a number",
        CHAT,
        {"messages": HELLO, "temperature": "hot"},
        400,
        "temperature",
    ),
    ("top_p 0", CHAT, {"messages": HELLO, "top_p": 0}, 400, "top_p"),
    ("top_p above 1", CHAT, {"messages": HELLO, "top_p": 1.01}, 400, "top_p"),
    ("top_k below 1", CHAT, {"messages": HELLO, "top_k": 0}, 400, "top_k"),
    ("max_tokens 0", CHAT, {"messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    (
        "max_tokens above the limit",
        CHAT,
        {"messages": HELLO, "max_tokens": FUZZ_MAX_LENGTH + 1},
        400,
        "max_tokens",
    ),
    (
        "prompt beyond the context",
        COMPLETIONS,
        {"prompt": LONG_PROMPT},
        400,
        "context_length_exceeded",
    ),
    ("n above 8", CHAT, {"messages": HELLO, "n": 9}, 400, "n"),
    ("empty stop string", CHAT, {"messages": HELLO, "stop": ""}, 400, "stop"),
    ("empty completions prompt", COMPLETIONS, {"prompt": ""}, 400, "prompt"),
    ("unknown model", CHAT, {"messages": HELLO, "model": "gpt-4"}, 404, "model_not_found"),
    (
        "oversized body",
        CHAT,
        b'{"messages": "' + b"x" * (1024 * 1024 + 10) + b'"}',
        413,
        "request_too_large",
    ),
    ("top_p 1 is fine", CHAT, {"messages": HELLO, "top_p": 1, "max_tokens": 1}, 200, None),
    ("unknown field", CHAT, {"messages": HELLO, "temprature": 1}, 400, "temprature"),
    (
        "stream_options without stream",
        CHAT,
        {"messages": HELLO, "stream_options": {"include_usage": True}},
        400,
        "stream_options",
    ),
    (
        "top_logprobs without logprobs",
        CHAT,
        {"messages": HELLO, "top_logprobs": 1},
        400,
        "top_logprobs",
    ),
    ("n of 0", CHAT, {"messages": HELLO, "n": 0}, 400, "n"),
    (
        "dropped fields are fine",
        CHAT,
        {"messages": HELLO, "max_tokens": 1, "user": "u", "metadata": {"a": "b"}, "store": False},
        200,
        None,
    ),
]
CASES += [
    ("seed not an integer", CHAT, {"messages": HELLO, "seed": "7"}, 400, "seed"),
    ("seed beyond 64 bits", COMPLETIONS, {"prompt": "Hello", "seed": 2**64}, 400, "seed"),
    (
        "penalty above 2",
        CHAT,
        {"messages": HELLO, "presence_penalty": 2.5},
        400,
        "presence_penalty",
    ),
    (
        "logit_bias not a token",
        CHAT,
        {"messages": HELLO, "logit_bias": {"x": 1}},
        400,
        "logit_bias",
    ),
    ("logprobs not a bool", CHAT, {"messages": HELLO, "logprobs": "yes"}, 400, "logprobs"),
    (
        "top_logprobs above 20",
        CHAT,
        {"messages": HELLO, "logprobs": True, "top_logprobs": 21},
        400,
        "top_logprobs",
    ),
    ("completions logprobs above 5", COMPLETIONS, {"prompt": "Hi", "logprobs": 6}, 400, "logprobs"),
    (
        "completions logprobs a bool",
        COMPLETIONS,
        {"prompt": "Hi", "logprobs": True},
        400,
        "logprobs",
    ),
    ("n not an integer", COMPLETIONS, {"prompt": "Hi", "n": "2"}, 400, "n"),
    ("too many choices", COMPLETIONS, {"prompt": ["a"] * 4, "n": 5}, 400, "n"),
    ("too many prompts", COMPLETIONS, {"prompt": ["a"] * 17}, 400, "prompt"),
    ("echo not a bool", COMPLETIONS, {"prompt": "Hi", "echo": "yes"}, 400, "echo"),
    (
        "echo with logprobs refused",
        COMPLETIONS,
        {"prompt": "Hi", "echo": True, "logprobs": 1},
        400,
        "echo",
    ),
    ("one empty prompt of several", COMPLETIONS, {"prompt": ["Hi", ""]}, 400, "prompt"),
]
RESPONSES = "/v1/responses"
CASES += [
    ("responses without input", RESPONSES, {}, 400, "input"),
    ("responses input a number", RESPONSES, {"input": 5}, 400, "input"),
    (
        "responses previous_response_id refused",
        RESPONSES,
        {"input": "Hi", "previous_response_id": "resp_x"},
        400,
        "previous_response_id",
    ),
    (
        "responses unknown input item",
        RESPONSES,
        {"input": [{"type": "file_search_call"}]},
        400,
        "input.0.type",
    ),
    (
        "responses non-function tool",
        RESPONSES,
        {"input": "Hi", "tools": [{"type": "web_search"}]},
        400,
        "tools.0.type",
    ),
    (
        "responses text format not a schema",
        RESPONSES,
        {
            "input": "Hi",
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}},
        },
        400,
        "text.format",
    ),
    (
        "responses max_output_tokens 0",
        RESPONSES,
        {"input": "Hi", "max_output_tokens": 0},
        400,
        "max_output_tokens",
    ),
    (
        "responses max_output_tokens above the limit",
        RESPONSES,
        {"input": "Hi", "max_output_tokens": 10**6},
        400,
        "max_output_tokens",
    ),
    (
        "responses message without content",
        RESPONSES,
        {"input": [{"role": "user"}]},
        400,
        "input",
    ),
    ("responses answers", RESPONSES, {"input": "Hi", "max_output_tokens": 2}, 200, None),
]
# Fields this deployment does not implement: each refused with a 400 naming it.
REFUSED: list[tuple[str, str, Any]] = [
    (CHAT, "functions", [{"name": "f"}]),
    (CHAT, "function_call", {"name": "f"}),
    (CHAT, "modalities", ["audio"]),
    (CHAT, "audio", {"voice": "alloy"}),
    (CHAT, "prediction", {"type": "content", "content": "x"}),
    (CHAT, "reasoning_effort", "high"),
    (CHAT, "verbosity", "high"),
    (CHAT, "web_search_options", {}),
    (COMPLETIONS, "suffix", "!"),
    (COMPLETIONS, "best_of", 3),
    (COMPLETIONS, "prompt", [15496, 11]),
]
CASES += [
    (
        f"{field} refused on {path}",
        path,
        {**({"messages": HELLO} if path == CHAT else {"prompt": "Hello"}), field: value},
        400,
        field,
    )
    for path, field, value in REFUSED
]
CASES += [
    (
        f"message {field} refused",
        CHAT,
        {"messages": [{"role": "user", "content": "Hi", field: "x"}]},
        400,
        f"messages.0.{field}",
    )
    for field in ("name", "function_call", "refusal", "audio")
]
CASES += [
    (
        "function message refused",
        CHAT,
        {"messages": [{"role": "function", "content": "42"}]},
        400,
        "messages.0.role",
    ),
    (
        "message tool_calls not a list",
        CHAT,
        {"messages": [{"role": "assistant", "content": "Hi", "tool_calls": "x"}]},
        400,
        "messages.0.tool_calls",
    ),
    (
        "tool message without tool_call_id",
        CHAT,
        {"messages": [{"role": "tool", "content": "42"}]},
        400,
        "messages.0",
    ),
    (
        "tool_choice naming no tool",
        CHAT,
        {
            "messages": HELLO,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        400,
        "tool_choice",
    ),
    (
        "response_format schema not a schema",
        CHAT,
        {
            "messages": HELLO,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            },
        },
        400,
        "response_format",
    ),
]


@pytest.mark.parametrize(
    ("what", "path", "body", "status", "expect"), CASES, ids=[c[0] for c in CASES]
)
def test_listed_bad_input(
    fuzz_app: Any,
    fuzz_keys: dict[str, tuple[str, KeyRecord]],
    what: str,
    path: str,
    body: Any,
    status: int,
    expect: str | None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {fuzz_keys['mine'][0]}",
        "Content-Type": "application/json",
    }
    with TestClient(fuzz_app, raise_server_exceptions=False) as client:
        response = client.post(path, content=content, headers=headers)
        assert response.status_code == status, response.text[:300]
        if status >= 400:
            error = assert_envelope(response)
            if expect is not None:
                assert expect in (error["code"], error["param"]), error
            if "refused" in what:
                assert "not supported by this deployment" in error["message"], error
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("who", ["missing", "wrong", "revoked", "other deployment"])
def test_bad_keys_get_the_same_401(
    fuzz_app: Any, fuzz_state: ServingState, fuzz_keys: dict[str, tuple[str, KeyRecord]], who: str
) -> None:
    mine = fuzz_keys["mine"][0]
    with TestClient(fuzz_app, raise_server_exceptions=False) as client:
        headers = {"Authorization": f"Bearer {mine}"}
        assert client.get("/v1/models", headers=headers).status_code == 200
        reference = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        if who == "missing":
            headers = {}
        elif who == "wrong":
            headers = {"Authorization": "Bearer gale-" + "A" * 43}
        elif who == "other deployment":
            headers = {"Authorization": f"Bearer {fuzz_keys['other'][0]}"}
        else:
            fuzz_state.update({"name": "fuzz", "parameters": {"max_length": 4}, "api_keys": []})
        response = client.post(CHAT, json={"messages": HELLO}, headers=headers)
        assert response.status_code == 401
        assert response.json() == reference.json()
        assert response.headers["www-authenticate"] == "Bearer"
