"""The application's ingress: owns its route prefix and relays each request to the model.

Ray Serve does not call a request again when the replica serving it dies, so
the HTTP route belongs to this small deployment, which calls the model through a
`DeploymentHandle`: `GaleModel.forward`, a stream, for a request that asks to stream,
and `GaleModel.answer`, one reply, for every other (`serving.relay` holds the logic,
without Ray):

- a call that fails before its answer started because the replica was lost
  (died, became unreachable, its node went away) is made again; Serve's router
  picks another replica, or waits for the replacement; up to `relay.ATTEMPTS` calls;
- an answer the replica produced is passed on as it is, whatever its status:
  the key check, the limits, the 413 and every error stay in the model's app;
- a stream that breaks after it started ends with one error event;
- a full queue (the model's `max_queued_requests`) answers 503 with Retry-After.

It takes no CPU of its own in placement and runs on the head node where Ray
names one, so a worker node's loss does not take the route down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle

from serving import metrics, relay, serve_config
from serving.openai_types import APIError
from serving.relay import Item, Message, Receive, Send

logger = logging.getLogger("ray.serve")

# Errors that mean the replica (or its worker, or its node) is gone, not that it answered.
LOST = (RayActorError, ReplicaUnavailableError, WorkerCrashedError, NodeDiedError)
UNAVAILABLE = "no replica of this deployment could take the request; try again"


def replica_lost(error: BaseException) -> bool:
    """Whether a call failed because its replica was lost (directly or as the task's cause)."""
    return isinstance(error, LOST) or isinstance(getattr(error, "cause", None), LOST)


class RelayApp:
    """The raw ASGI app of the ingress: reads each request's body and relays it to the model.

    A class with an async `__call__` (not a bound method), so uvicorn's lifespan
    support, which Serve runs it under, recognises it as ASGI 3.
    """

    def __init__(self, model: DeploymentHandle, name: str, counters: Any) -> None:
        self._model, self._streamed = model, model.options(stream=True)
        self._name, self._counters = name, counters

    async def _call(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[Item]:
        """One call of the model: `answer` (one reply) unless the request asks to stream."""
        if relay.wants_stream(body):
            async for item in self._stream(scope, body):
                yield item
            return
        whole: Any = self._model.answer.remote(scope, body)
        try:
            head = await whole
        except asyncio.CancelledError:
            whole.cancel()
            raise
        yield head

    async def _stream(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[Item]:
        """One call of the model's `forward`, cancelled if left before its end."""
        response: Any = self._streamed.forward.remote(scope, body)
        finished = False
        try:
            async for item in response:
                yield item
            finished = True
        finally:
            if not finished:
                response.cancel()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: lifespan, or an HTTP request relayed to the model."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await relay.read_body(receive, scope.get("headers", []))
        except relay.Disconnected:
            return
        except APIError as error:
            await relay.send_error(send, error)
            return
        try:
            relayed = await relay.relay(
                self._call, relay.request_scope(scope), body, send, replica_lost
            )
        except relay.ReplicasLost as lost:
            self._count(relay.ATTEMPTS - 1, broken=False)
            logger.error("gale: %s %s: %s", scope.get("method"), scope.get("path"), lost)
            await relay.send_error(send, _unavailable(), {"retry-after": "1"})
        except BackPressureError as full:
            overloaded = APIError(
                full.status_code, full.message, type="server_error", code="overloaded"
            )
            retry = full.retry_after_s
            headers = {} if retry is None else {"retry-after": str(max(0, math.ceil(retry)))}
            await relay.send_error(send, overloaded, headers)
        except DeploymentUnavailableError as unavailable:
            logger.warning("gale: %s", unavailable.message)
            await relay.send_error(send, _unavailable(), {"retry-after": "1"})
        except Exception:
            logger.exception("gale: %s %s failed", scope.get("method"), scope.get("path"))
            await relay.send_error(send, APIError(500, "internal error", type="server_error"))
        else:
            self._count(relayed.attempts - 1, broken=relayed.broken)

    def _count(self, retries: int, *, broken: bool) -> None:
        if retries:
            logger.info("gale: %d retries of one request on another replica", retries)
        if self._counters is not None:
            self._counters.retried(self._name, retries)
            if broken:
                self._counters.broke(self._name)


@serve.deployment(name=serve_config.INGRESS_NAME)
@serve.ingress()  # late-bound: __serve_build_asgi_app__ supplies the relaying ASGI app
class GaleIngress:
    """One ingress replica: the relaying ASGI app over a handle to the model's deployment."""

    def __init__(self, model: DeploymentHandle) -> None:
        counters = None
        if metrics.enabled():
            from serving.ray_metrics import RayIngressCounters

            counters = RayIngressCounters()
        self._relay = RelayApp(model, serve.get_replica_context().app_name, counters)

    def __serve_build_asgi_app__(self) -> RelayApp:
        """The ASGI app Serve gives this replica's HTTP requests to."""
        return self._relay


def _unavailable() -> APIError:
    return APIError(503, UNAVAILABLE, type="server_error", code="replica_unavailable")


async def _lifespan(receive: Receive, send: Send) -> None:
    """ASGI lifespan: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
