"""The ingress's ASGI app (serving.ingress.RelayApp) over a stand-in for the model's handle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from serving import relay
from serving.ingress import RelayApp, replica_lost
from serving.relay import Head, Item, Message

JSON = [(b"content-type", b"application/json")]


class Response:
    """What `handle.forward.remote()` gives back: async items, cancellable."""

    def __init__(self, outcome: list[Item] | BaseException) -> None:
        self.outcome, self.cancelled = outcome, False

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._items()

    async def _items(self) -> AsyncIterator[Item]:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        for item in self.outcome:
            yield item

    def cancel(self) -> None:
        self.cancelled = True


class Whole:
    """What `handle.answer.remote()` gives back: awaited for the whole answer, cancellable."""

    def __init__(self, outcome: list[Item] | BaseException) -> None:
        self.outcome, self.cancelled = outcome, False

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> Item:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return await relay.whole(Response(self.outcome).__aiter__())

    def cancel(self) -> None:
        self.cancelled = True


class Handle:
    """Stands for the model's DeploymentHandle: answers each call with the next outcome.

    `calls` records (method, body) per call: `forward` streams, `answer` replies once.
    """

    def __init__(self, *outcomes: list[Item] | BaseException, streamed: bool = False) -> None:
        self.outcomes = list(outcomes)
        self.streamed = streamed
        self.calls: list[tuple[str, bytes]] = []
        self._streaming: Handle | None = None

    def options(self, **options: Any) -> Handle:
        """The streaming handle: one per handle, with outcomes and calls of its own."""
        assert options == {"stream": True}
        if self._streaming is None:
            self._streaming = Handle(streamed=True)
        return self._streaming

    def method(self, name: str) -> Any:
        handle = self

        class Method:
            def remote(self, scope: dict[str, Any], body: bytes) -> Response | Whole:
                handle.calls.append((name, body))
                outcome = handle.outcomes.pop(0)
                return Response(outcome) if name == "forward" else Whole(outcome)

        return Method()

    @property
    def forward(self) -> Any:
        assert self.streamed, "forward is called through the streaming handle"
        return self.method("forward")

    @property
    def answer(self) -> Any:
        assert not self.streamed, "answer is called through the plain handle"
        return self.method("answer")


def serve(app: RelayApp, body: bytes = b"{}") -> list[Message]:
    sent: list[Message] = []
    parts = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return parts.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/m/v1/chat/completions", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_uvicorn_takes_it_for_an_asgi3_app_with_a_lifespan() -> None:
    app = RelayApp(Handle(), "m", None)  # type: ignore[arg-type]
    config = uvicorn.Config(app, lifespan="on", log_config=None)
    config.load()
    assert config.interface == "asgi3"

    async def lifespan() -> bool:
        on = uvicorn.lifespan.on.LifespanOn(config)
        await on.startup()
        failed = on.should_exit
        await on.shutdown()
        return failed

    assert asyncio.run(lifespan()) is False


def test_a_dead_replica_is_called_again_and_the_body_goes_with_it() -> None:
    handle = Handle(ActorDiedError(), [Head(200, JSON, b'{"ok": 1}')])
    sent = serve(RelayApp(handle, "m", None), b'{"q": 1}')  # type: ignore[arg-type]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"ok": 1}'
    assert handle.calls == [("answer", b'{"q": 1}'), ("answer", b'{"q": 1}')]


def test_a_request_that_asks_to_stream_is_relayed_as_a_stream_and_others_whole() -> None:
    handle = Handle()
    streamed = handle.options(stream=True)
    app = RelayApp(handle, "m", None)  # type: ignore[arg-type]
    streamed.outcomes = [[Head(200, JSON, b"data: 1\n\n", more=True), b"data: 2\n\n"]]
    handle.outcomes = [[Head(200, JSON, b'{"a": ', more=True), b"1}"]]
    sent = serve(app, b'{"stream": true}')
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"data: 1\n\ndata: 2\n\n"
    sent = serve(app, b'{"stream": false}')
    assert sent[1] == {"type": "http.response.body", "body": b'{"a": 1}', "more_body": False}
    assert streamed.calls == [("forward", b'{"stream": true}')]
    assert handle.calls == [("answer", b'{"stream": false}')]


def test_a_full_queue_answers_503_with_retry_after_in_the_envelope() -> None:
    handle = Handle(BackPressureError(40, 32, 503, 1))
    sent = serve(RelayApp(handle, "m", None))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "overloaded"
    assert len(handle.calls) == 1


def test_replicas_lost_on_every_attempt_answer_503_and_other_failures_500() -> None:
    sent = serve(RelayApp(Handle(*[ActorDiedError()] * 3), "m", None))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "replica_unavailable"
    sent = serve(RelayApp(Handle(ValueError("bug")), "m", None))  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"])["error"]["type"] == "server_error"


def test_only_a_lost_replica_counts_as_lost() -> None:
    assert replica_lost(ActorDiedError())
    assert not replica_lost(ValueError()) and not replica_lost(BackPressureError(1, 1))
