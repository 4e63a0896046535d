"""The request path under hostile or unlucky input: what reaches the engine, and when.

Each test wraps the real engine (a constructor argument of `build_api`) only to
observe or provoke one thing: a chat template that refuses, a tokenizer call
that is slow, an engine that fails with internal detail in its message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

from serving.api import build_api
from serving.engines.base import Chunk, Engine, SamplingParams
from serving.engines.errors import EngineError
from serving.keys import KeyRecord
from serving.replica_state import ServingState
from tests.serving.test_api import FRANCE, error_of
from tests.serving.wrapped import Wrapped

pytestmark = [pytest.mark.model, pytest.mark.anyio]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


async def client_for(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


@pytest.fixture
def main_key(keys: dict[str, tuple[str, KeyRecord]]) -> str:
    return keys["main"][0]


# --- chat templates and parsing ---------------------------------------------------------


class StrictTemplate(Wrapped):
    """The real tokenizer with a chat template that refuses every conversation, as some do."""

    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        tokenizer = self.inner.tokenizer  # type: ignore[attr-defined]
        template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
        text = tokenizer.apply_chat_template(
            list(messages), chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text)["input_ids"])


async def test_chat_template_refusal_is_a_400_on_messages(
    engine: Engine, state: ServingState, main_key: str
) -> None:
    async with await client_for(build_api(StrictTemplate(engine), state), main_key) as client:
        error = error_of(await client.post(CHAT, json={"messages": FRANCE}), 400)
        assert error["param"] == "messages"
        assert "roles must alternate" in error["message"]
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"messages": ' + b"[" * 100_000, b'{"a":' * 100_000]
)
async def test_deeply_nested_body_is_a_400(client: httpx.AsyncClient, body: bytes) -> None:
    for route in (CHAT, COMPLETIONS):
        response = await client.post(route, content=body)
        error = error_of(response, 400)
        assert "nested" in error["message"]


async def test_nesting_within_the_parser_limit_still_gets_a_400(client: httpx.AsyncClient) -> None:
    body = b'{"messages": ' + b"[" * 500 + b"]" * 500 + b"}"
    error_of(await client.post(CHAT, content=body), 400)


# --- stop strings -----------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["x" * 65, ["ok", "y" * 65]])
async def test_stop_longer_than_the_spec_allows_is_refused(
    client: httpx.AsyncClient, stop: Any
) -> None:
    error = error_of(await client.post(CHAT, json={"messages": FRANCE, "stop": stop}), 400)
    assert error["param"] == "stop" and "64" in error["message"]


async def test_stop_of_64_characters_is_fine(client: httpx.AsyncClient) -> None:
    body = {"messages": FRANCE, "stop": "z" * 64, "max_tokens": 2}
    assert (await client.post(CHAT, json=body)).status_code == 200


# --- tokenization: size checked first, then off the event loop ---------------------------


class CountingTokenizer(Wrapped):
    """The real engine, counting tokenizer calls."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.calls = 0

    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        self.calls += 1
        return super().encode_chat(messages, tools)

    def encode_text(self, prompt: str) -> list[int]:
        self.calls += 1
        return super().encode_text(prompt)


async def test_a_prompt_too_long_to_fit_is_refused_before_tokenizing(
    engine: Engine, state: ServingState, main_key: str
) -> None:
    counting = CountingTokenizer(engine)
    # Under the 1 MiB body limit, yet more characters than the context could hold as tokens.
    huge = "a" * (900 * 1024)
    assert len(huge) > engine.context_length * 32
    async with await client_for(build_api(counting, state), main_key) as client:
        refused = [
            await client.post(COMPLETIONS, json={"prompt": huge}),
            await client.post(CHAT, json={"messages": [{"role": "user", "content": huge}]}),
            await client.post(
                CHAT,
                json={"messages": [{"role": "user", "content": huge[:500_000]}] * 2},
            ),
        ]
        for response, param in zip(refused, ("prompt", "messages", "messages"), strict=True):
            error = error_of(response, 400)
            assert (error["param"], error["code"]) == (param, "context_length_exceeded")
        assert counting.calls == 0
        fine = await client.post(COMPLETIONS, json={"prompt": "Hello", "max_tokens": 1})
        assert fine.status_code == 200 and counting.calls == 1


class HeldTokenizer(Wrapped):
    """The real engine, whose tokenizer holds a marked prompt until the test lets it go."""

    MARK = "HOLD "

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.entered, self.release, self.left = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )

    def encode_text(self, prompt: str) -> list[int]:
        if prompt.startswith(self.MARK):
            self.entered.set()
            # Blocks whichever thread tokenizes: on the event loop, nothing else would run.
            self.release.wait(timeout=10)
            self.left.set()
        return super().encode_text(prompt)


@pytest.fixture
def held(engine: Engine) -> Iterator[HeldTokenizer]:
    held = HeldTokenizer(engine)
    yield held
    held.release.set()


async def test_a_stream_keeps_going_while_another_prompt_is_tokenized(
    held: HeldTokenizer, state: ServingState, main_key: str
) -> None:
    async with await client_for(build_api(held, state), main_key) as client:
        slow = asyncio.create_task(
            client.post(COMPLETIONS, json={"prompt": HeldTokenizer.MARK + "Hi", "max_tokens": 1})
        )
        assert await asyncio.to_thread(held.entered.wait, 10)
        body = {"prompt": "Once upon a time", "max_tokens": 8, "stream": True}
        streamed = await client.post(COMPLETIONS, json=body)
        # The stream ran to its end while the other prompt was still being tokenized.
        still_tokenizing = not held.left.is_set()
        held.release.set()
        assert still_tokenizing
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert streamed.text.count('"text"') >= 3
        assert (await slow).status_code == 200


# --- reading the body --------------------------------------------------------------------


async def test_a_body_sent_too_slowly_gets_a_408(
    engine: Engine, state: ServingState, main_key: str
) -> None:
    app = build_api(engine, state)
    app.state.body_deadline_s = 0.5

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"prompt": '
        await asyncio.sleep(5)
        yield b'"Hi"}'

    async with await client_for(app, main_key) as client:
        started = asyncio.get_running_loop().time()
        response = await client.post(COMPLETIONS, content=trickle())
        assert asyncio.get_running_loop().time() - started < 4
        error = error_of(response, 408)
        assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
        fine = await client.post(COMPLETIONS, json={"prompt": "Hi", "max_tokens": 1})
        assert fine.status_code == 200


# --- trailing slashes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/v1/models/", "/health/"])
async def test_trailing_slash_never_redirects_to_the_host_header(
    client: httpx.AsyncClient, path: str
) -> None:
    headers = {"Host": "evil.example"}
    response = await client.request(
        "GET" if "chat" not in path else "POST", path, headers=headers, json={"messages": FRANCE}
    )
    assert "location" not in response.headers
    error = error_of(response, 404)
    assert error["code"] == "not_found" and path.rstrip("/") in error["message"]
    assert "evil.example" not in response.text


# --- engine failures -------------------------------------------------------------------------

SECRET = "CUDA error at /opt/private/build/kernel.cu:42 (token sk-internal)"


class Failing(Wrapped):
    """The real engine, failing every request with internal detail in the message."""

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        raise EngineError(SECRET)
        yield Chunk("")  # an async generator, as engines are


class FailingAfterOne(Wrapped):
    """The real engine, failing every stream after its first piece."""

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        async for chunk in self.inner.stream(prompt_ids, params):
            yield chunk
            raise EngineError(SECRET)


@pytest.fixture
def replica_log() -> Iterator[list[logging.LogRecord]]:
    """What the app writes to Serve's replica logger."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger("ray.serve"), Keep(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize("wrapper", [Failing, FailingAfterOne])
async def test_engine_error_text_is_logged_not_sent(
    engine: Engine,
    state: ServingState,
    main_key: str,
    replica_log: list[logging.LogRecord],
    wrapper: type[Wrapped],
) -> None:
    async with await client_for(build_api(wrapper(engine), state), main_key) as client:
        body = {"prompt": "Once upon a time", "max_tokens": 8}
        whole = await client.post(COMPLETIONS, json=body)
        error = error_of(whole, 503)
        assert error["code"] == "engine_error" and error["type"] == "server_error"
        streamed = await client.post(COMPLETIONS, json={**body, "stream": True})
        if wrapper is Failing:  # refused before the first piece: a status
            assert error_of(streamed, 503)["code"] == "engine_error"
        else:  # failed after it: an error event, then the end of the stream
            assert streamed.status_code == 200
            assert '"server_error"' in streamed.text
            assert streamed.text.endswith("data: [DONE]\n\n")
        for text in (whole.text, streamed.text):
            assert "private" not in text and "sk-internal" not in text
        logged = "\n".join(record.getMessage() for record in replica_log)
        assert logged.count(SECRET) >= 2
