"""The ingress's ASGI app (serving.ingress.RelayApp) over a stand-in for the model's handle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

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


class Handle:
    """Stands for the model's DeploymentHandle: answers each call with the next outcome."""

    def __init__(self, *outcomes: list[Item] | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[dict[str, Any], bytes]] = []

    def options(self, **options: Any) -> Handle:
        assert options == {"stream": True}
        return self

    @property
    def forward(self) -> Handle:
        return self

    def remote(self, scope: dict[str, Any], body: bytes) -> Response:
        self.calls.append((scope, body))
        return Response(self.outcomes.pop(0))


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
    assert [body for _, body in handle.calls] == [b'{"q": 1}', b'{"q": 1}']


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
