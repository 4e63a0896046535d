"""The relay between ingress and model replica (serving.relay): retries, streams, bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from serving import relay
from serving.openai_types import APIError
from serving.relay import Head, Item, Message, Receive, Send

SCOPE = {"type": "http", "method": "POST", "path": "/m/v1/chat/completions", "headers": []}
SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]


class Lost(Exception):
    """Stands for Ray's errors of a lost replica."""


def lost(error: BaseException) -> bool:
    return isinstance(error, Lost)


async def collect(items: AsyncIterator[Item]) -> list[Item]:
    return [item async for item in items]


class Sent:
    """The ASGI messages an answer sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def ended(self) -> bool:
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)


def calls(*outcomes: list[Item] | BaseException) -> tuple[relay.Call, list[int]]:
    """A call that fails or answers as told, once per outcome; and the count of calls made."""
    made: list[int] = []

    async def call(scope: dict[str, Any], body: bytes) -> AsyncIterator[Item]:
        outcome = outcomes[len(made)]
        made.append(1)
        if isinstance(outcome, BaseException):
            raise outcome
        for item in outcome:
            if isinstance(item, BaseException):
                raise item
            yield item

    return call, made


async def no_sleep(seconds: float) -> None:
    return None


def run_relay(call: relay.Call, sent: Sent, **options: Any) -> relay.Relayed:
    return asyncio.run(relay.relay(call, SCOPE, b"{}", sent, lost, sleep=no_sleep, **options))


def test_a_lost_replica_before_the_answer_is_called_again_until_one_answers() -> None:
    answer = [Head(200, JSON, b'{"ok": true}')]
    call, made = calls(Lost(), Lost(), answer)
    sent = Sent()
    relayed = run_relay(call, sent)
    assert (relayed.attempts, relayed.broken, len(made)) == (3, False, 3)
    assert (sent.status, sent.body, sent.ended) == (200, b'{"ok": true}', True)
    # A whole answer in its head is two messages: start and the complete body.
    assert len(sent.messages) == 2


def test_answers_the_replica_gave_are_never_called_again() -> None:
    for status in (400, 401, 429, 500, 503):
        call, made = calls([Head(status, JSON, b"{}")], [Head(200, JSON, b"{}")])
        sent = Sent()
        assert run_relay(call, sent).attempts == 1
        assert (sent.status, len(made)) == (status, 1)


def test_other_errors_before_the_answer_are_raised_without_a_retry() -> None:
    call, made = calls(ValueError("bad"), [Head(200, JSON, b"{}")])
    with pytest.raises(ValueError):
        run_relay(call, Sent())
    assert len(made) == 1


def test_attempts_are_bounded() -> None:
    call, made = calls(Lost(), Lost(), Lost(), [Head(200, JSON, b"{}")])
    sent = Sent()
    with pytest.raises(relay.ReplicasLost):
        run_relay(call, sent)
    assert len(made) == relay.ATTEMPTS and not sent.messages


def sse(data: dict[str, Any] | str) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
}


def test_a_stream_that_breaks_ends_with_an_error_event_the_openai_sdk_raises() -> None:
    call, made = calls([Head(200, SSE, sse(CHUNK), more=True), sse(CHUNK), Lost()], [])
    sent = Sent()
    relayed = run_relay(call, sent)
    assert (relayed.broken, len(made), sent.ended) == (True, 1, True)
    events = sent.body.split(b"\n\n")
    assert json.loads(events[-2].removeprefix(b"data: "))["error"]["type"] == "server_error"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sent.body)

    client = openai.OpenAI(
        api_key="k",
        base_url="http://x/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="stopped"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["Hi", "Hi"]


def test_a_plain_body_that_breaks_just_ends() -> None:
    call, _ = calls([Head(200, JSON, b'{"a"', more=True), Lost()])
    sent = Sent()
    assert run_relay(call, sent).broken
    assert sent.body == b'{"a"' and sent.ended


def test_a_complete_stream_ends_once() -> None:
    call, _ = calls([Head(200, SSE, b"", more=True), sse(CHUNK), sse("[DONE]")])
    sent = Sent()
    assert not run_relay(call, sent).broken
    assert sent.body == sse(CHUNK) + sse("[DONE]") and sent.ended
    assert [m.get("more_body") for m in sent.messages[1:]] == [True, True, False]


# --- the replica's end: an ASGI app run in-process ---


async def json_app(scope: Message, receive: Receive, send: Send) -> None:
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 201, "headers": JSON})
    await send({"type": "http.response.body", "body": body + scope["path"].encode()})


def test_respond_gives_a_whole_answer_as_one_head() -> None:
    items = asyncio.run(collect(relay.respond(json_app, dict(SCOPE), b"echo:")))
    assert items == [Head(201, JSON, b"echo:/m/v1/chat/completions", more=False)]


async def streaming_app(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await asyncio.sleep(0.01)
    # Sent together, between two reads: coalesced into one item.
    await send({"type": "http.response.body", "body": b"b", "more_body": True})
    await send({"type": "http.response.body", "body": b"c", "more_body": True})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_respond_streams_and_coalesces_what_is_ready_together() -> None:
    items = asyncio.run(collect(relay.respond(streaming_app, dict(SCOPE), b"")))
    assert items == [Head(200, SSE, b"a", more=True), b"bc"]


def test_whole_joins_a_streamed_answer_into_one_head_that_ends_it() -> None:
    answer = asyncio.run(relay.whole(relay.respond(streaming_app, dict(SCOPE), b"")))
    assert answer == Head(200, SSE, b"abc", more=False)
    assert asyncio.run(relay.whole(relay.respond(json_app, dict(SCOPE), b"x"))) == Head(
        201, JSON, b"x/m/v1/chat/completions"
    )


def test_whole_raises_when_the_app_fails_or_never_answers() -> None:
    with pytest.raises(RuntimeError, match="engine gone"):
        asyncio.run(relay.whole(relay.respond(failing_stream, dict(SCOPE), b"")))

    async def nothing() -> AsyncIterator[Item]:
        return
        yield b""

    with pytest.raises(RuntimeError, match="without an answer"):
        asyncio.run(relay.whole(nothing()))


@pytest.mark.parametrize(
    ("body", "streams"),
    [
        (b'{"model": "m", "stream": true}', True),
        (b'{"model": "m", "stream" : true, "stream_options": {}}', True),
        (b'{"model": "m", "stream": false}', False),
        (b'{"model": "m", "stream": null}', False),
        (b'{"model": "m", "messages": []}', False),
        (b'{"stream": true', False),  # not JSON: its answer is a 400, whole
        (b'["stream"]', False),
        (b"", False),
    ],
)
def test_only_a_request_that_asks_to_stream_is_relayed_as_a_stream(
    body: bytes, streams: bool
) -> None:
    assert relay.wants_stream(body) is streams


async def failing_stream(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await asyncio.sleep(0.01)
    raise RuntimeError("engine gone")


async def failing_after_answer(scope: Message, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 500, "headers": JSON})
    await send({"type": "http.response.body", "body": b"{}"})
    raise RuntimeError("re-raised after answering, as Starlette's error middleware does")


def test_respond_raises_when_the_app_fails_before_its_answer_is_complete() -> None:
    with pytest.raises(RuntimeError, match="engine gone"):
        asyncio.run(collect(relay.respond(failing_stream, dict(SCOPE), b"")))
    items = asyncio.run(collect(relay.respond(failing_after_answer, dict(SCOPE), b"")))
    assert items == [Head(500, JSON, b"{}")]


def test_leaving_a_stream_early_tells_the_app_the_client_went_away() -> None:
    seen: list[str] = []

    async def waits_for_disconnect(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        seen.append((await receive())["type"])

    async def main() -> None:
        stream = relay.respond(waits_for_disconnect, dict(SCOPE), b"")
        assert await anext(stream) == Head(200, SSE, b"a", more=True)
        await stream.aclose()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert seen == ["http.disconnect"]


def test_relay_through_respond_end_to_end() -> None:
    async def call(scope: dict[str, Any], body: bytes) -> AsyncIterator[Item]:
        async for item in relay.respond(streaming_app, scope, body):
            yield item

    sent = Sent()
    assert not run_relay(call, sent).broken
    assert (sent.status, sent.body, sent.ended) == (200, b"abc", True)


# --- reading the client's body ---


def receiver(*parts: bytes, then: Message | None = None) -> Receive:
    messages: list[Message] = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return then
        await asyncio.sleep(3600)
        raise AssertionError

    return receive


def test_read_body_joins_parts_and_cuts_a_large_one_one_byte_over() -> None:
    assert asyncio.run(relay.read_body(receiver(b"ab", b"cd"), [])) == b"abcd"
    big = b"x" * (relay.MAX_BODY_BYTES // 2 + 1)
    cut = asyncio.run(relay.read_body(receiver(big, big, big), []))
    assert len(cut) == relay.MAX_BODY_BYTES + 1
    # Declared too large: not read at all (the app refuses it by its Content-Length).
    declared = [(b"content-length", str(relay.MAX_BODY_BYTES + 1).encode())]
    assert asyncio.run(relay.read_body(receiver(big), declared)) == b""


def test_read_body_gives_up_after_its_deadline_and_on_disconnect() -> None:
    async def trickles() -> Message:
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"a", "more_body": True}

    with pytest.raises(APIError) as refused:
        asyncio.run(relay.read_body(trickles, [], deadline_s=0.1))
    assert refused.value.status == 408
    gone = receiver(then={"type": "http.disconnect"})
    with pytest.raises(relay.Disconnected):
        asyncio.run(relay.read_body(gone, []))


def test_request_scope_keeps_plain_values_only() -> None:
    scope = {
        **SCOPE,
        "headers": [(b"authorization", b"Bearer k")],
        "client": ["1.2.3.4", 5],
        "app": object(),
        "state": {"x": 1},
    }
    kept = relay.request_scope(scope)
    assert "app" not in kept and "state" not in kept
    assert kept["client"] == ("1.2.3.4", 5) and kept["headers"] == [(b"authorization", b"Bearer k")]


def test_the_interrupted_stream_example_asks_again_after_the_error_event() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "interrupted_stream.py"
    spec = importlib.util.spec_from_file_location("interrupted_stream", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    bodies = [sse(CHUNK) + relay.broken_event(), sse(CHUNK) + sse(CHUNK) + sse("[DONE]")]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=bodies.pop(0)
        )

    client = openai.OpenAI(
        api_key="k",
        base_url="http://x/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    assert example.stream_answer(client, "m", "Hi") == "HiHi"
    assert not bodies
