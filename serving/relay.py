"""One HTTP request carried across a replica call that can fail: both ends, without Ray.

The model replica's end (`respond`) runs its ASGI app in-process on a request
and yields the answer as a stream: first a `Head` (status, headers and the body
already produced), then body chunks. Messages the app sends while the previous
item is still travelling are coalesced into one item, so a non-streamed answer
is one item and a busy stream pays the call's per-item cost once per batch.

A request that does not ask to stream is answered `whole`: the same items, joined
into one `Head` that the replica returns in a single reply.

The ingress's end (`relay`) makes the call, and when it fails before the head
arrived because the replica was lost (the caller says which errors mean that),
makes it again, up to `ATTEMPTS` times; the router then picks another replica
or waits for the replacement. Once the head is out an answer has started and
is never repeated: a stream that breaks is ended, for `text/event-stream` with
one last event in OpenAI's error envelope (the `openai` SDK raises it as an
`APIError`). Nothing here imports Ray or an HTTP framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.openai_types import APIError

# The client's whole body: bigger ones are refused (413) by the model's app, which checks
# the key first; the ingress passes on at most one byte more than this so it can tell.
MAX_BODY_BYTES = 1024 * 1024
# The whole body must arrive within this time: a client trickling it would hold a slot.
BODY_DEADLINE_S = 30.0
# How long an app left mid-answer has to stop on its own before it is cancelled.
DISCONNECT_GRACE_S = 5.0
ATTEMPTS = 3
BACKOFF_S = (0.05, 0.25)
# The scope keys a replica's app needs (all of them plain, picklable values).
SCOPE_KEYS = (
    "type",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "root_path",
    "query_string",
    "headers",
    "client",
    "server",
)
REPLICA_LOST = "the replica serving this request stopped before it answered; try again"
STREAM_BROKEN = "the replica serving this stream stopped; the answer is incomplete"
SSE = b"text/event-stream"

logger = logging.getLogger("ray.serve")

Headers = list[tuple[bytes, bytes]]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Head:
    """The start of an answer: status, headers, and the body produced with it."""

    status: int
    headers: Headers
    body: bytes
    # Whether body chunks follow (False: the whole answer is in the head).
    more: bool = False


Item = Head | bytes
Call = Callable[[dict[str, Any], bytes], AsyncIterator[Item]]


def request_scope(scope: Message) -> dict[str, Any]:
    """What of the ingress's ASGI scope the replica's app gets."""
    kept = {key: scope[key] for key in SCOPE_KEYS if key in scope}
    kept["headers"] = [(bytes(k), bytes(v)) for k, v in scope.get("headers", ())]
    for key in ("client", "server"):
        if kept.get(key) is not None:
            kept[key] = tuple(kept[key])
    return kept


async def respond(app: ASGIApp, scope: dict[str, Any], body: bytes) -> AsyncIterator[Item]:
    """Run `app` on one request with this `body`; yield its head, then coalesced body chunks.

    The stream ends when the app has sent its whole answer. An app that fails before
    that raises here, so the caller sees a broken answer, not a short one.
    """
    messages: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.put_nowait(message)

    async def run() -> None:
        try:
            await app({**scope, "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        except Exception as error:
            messages.put_nowait(error)
        finally:
            messages.put_nowait(None)

    task = asyncio.get_running_loop().create_task(run())
    start: tuple[int, Headers] | None = None
    head_sent = False
    try:
        while True:
            batch = [await messages.get()]
            while not messages.empty():
                batch.append(messages.get_nowait())
            chunks: list[bytes] = []
            complete, ended, failure = False, False, None
            for message in batch:
                if message is None:
                    ended = True
                elif isinstance(message, BaseException):
                    failure = message
                elif message["type"] == "http.response.start":
                    start = (int(message["status"]), list(message.get("headers", [])))
                elif message["type"] == "http.response.body":
                    chunks.append(bytes(message.get("body", b"")))
                    complete = complete or not message.get("more_body", False)
            data = b"".join(chunks)
            if start is not None and not head_sent:
                head_sent = True
                yield Head(start[0], start[1], data, more=not complete)
            elif data:
                yield data
            if complete:
                return
            if failure is not None:
                raise failure
            if ended:
                raise RuntimeError("the app returned without completing its answer")
    finally:
        # Left early (the client went away): the app hears of it as ASGI says, and stops
        # its generation itself; one that does not listen is cancelled a little later.
        disconnected.set()
        if not task.done():
            asyncio.get_running_loop().call_later(DISCONNECT_GRACE_S, task.cancel)


def wants_stream(body: bytes) -> bool:
    """Whether the request asks for a streamed answer: `"stream": true` in its JSON body.

    Only those are relayed as a stream; every other answer comes back whole, in one
    reply, which costs both ends less than a stream of a single item. A body that is
    not JSON goes whole too (its answer is a 400).
    """
    if b'"stream"' not in body:
        return False
    try:
        request = json.loads(body)
    except ValueError:
        return False
    return isinstance(request, dict) and bool(request.get("stream"))


async def whole(items: AsyncIterator[Item]) -> Head:
    """The answer `items` make (as `respond` yields them) as one `Head` holding the whole body."""
    head: Head | None = None
    chunks: list[bytes] = []
    async for item in items:
        if isinstance(item, Head):
            head = item
            chunks.append(item.body)
        else:
            chunks.append(item)
    if head is None:
        raise RuntimeError("the app ended without an answer")
    return Head(head.status, head.headers, b"".join(chunks))


class ReplicasLost(Exception):
    """Every attempt lost its replica before the answer started."""


@dataclass(frozen=True)
class Relayed:
    """How a relayed request went: the calls it took, whether its answer broke off."""

    attempts: int
    broken: bool


async def relay(
    call: Call,
    scope: dict[str, Any],
    body: bytes,
    send: Send,
    lost: Callable[[BaseException], bool],
    *,
    attempts: int = ATTEMPTS,
    backoff_s: Sequence[float] = BACKOFF_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Relayed:
    """Answer one request through `call`, calling again while its replica is `lost` early.

    Raises what the call raised before the answer started if that is not a lost
    replica (the caller answers it), and `ReplicasLost` once `attempts` calls lost theirs.
    """
    for attempt in range(1, attempts + 1):
        stream = call(scope, body)
        try:
            head = await anext(stream)
        except BaseException as error:
            await _close(stream)
            if isinstance(error, StopAsyncIteration):
                raise RuntimeError("the replica ended the call without an answer") from None
            if not isinstance(error, Exception) or not lost(error):
                raise
            if attempt == attempts:
                raise ReplicasLost(f"{attempts} attempts lost their replica") from error
            logger.warning(
                "gale: %s %s lost its replica before answering (%s); retrying, attempt %d of %d",
                scope.get("method"),
                scope.get("path"),
                type(error).__name__,
                attempt + 1,
                attempts,
            )
            await sleep(backoff_s[min(attempt - 1, len(backoff_s) - 1)])
            continue
        try:
            broken = await _pass_on(head, stream, send)
        finally:
            await _close(stream)
        return Relayed(attempt, broken)
    raise AssertionError("unreachable")  # pragma: no cover


async def _pass_on(head: Item, stream: AsyncIterator[Item], send: Send) -> bool:
    """Send the answer that started with `head`; True when the stream broke off."""
    if not isinstance(head, Head):
        raise TypeError(f"an answer starts with its head, not {type(head).__name__}")
    await send({"type": "http.response.start", "status": head.status, "headers": head.headers})
    if not head.more:
        await send({"type": "http.response.body", "body": head.body, "more_body": False})
        return False
    if head.body:
        await send({"type": "http.response.body", "body": head.body, "more_body": True})
    broken = False
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception as error:
        broken = True
        logger.warning("gale: an answer broke off after it started: %s", type(error).__name__)
        if _is_event_stream(head.headers):
            await send({"type": "http.response.body", "body": broken_event(), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return broken


def _is_event_stream(headers: Headers) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(SSE) for k, v in headers)


def broken_event() -> bytes:
    """The last event of a stream whose replica stopped: OpenAI's error envelope."""
    error = APIError(503, STREAM_BROKEN, type="server_error", code="stream_interrupted")
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"


async def _close(stream: AsyncIterator[Item]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


class Disconnected(Exception):
    """The client went away before its request's body arrived."""


async def read_body(
    receive: Receive, headers: Headers, deadline_s: float = BODY_DEADLINE_S
) -> bytes:
    """The request's body, cut to one byte over the limit (the app refuses it after the key check).

    A body declared larger than the limit is not read at all: the app refuses it by its
    Content-Length. Raises `APIError` 408 when the body does not arrive within `deadline_s`.
    """
    declared = next((v for k, v in headers if k.lower() == b"content-length"), b"")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return b""
    body = bytearray()
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                part = await receive()
                if part["type"] == "http.disconnect":
                    raise Disconnected
                body += part.get("body", b"")
                if len(body) > MAX_BODY_BYTES:
                    return bytes(body[: MAX_BODY_BYTES + 1])
                if not part.get("more_body", False):
                    return bytes(body)
    except TimeoutError:
        message = f"the request body did not arrive within {deadline_s:g} seconds"
        raise APIError(408, message, code="request_timeout") from None


async def send_error(send: Send, error: APIError, headers: dict[str, str] | None = None) -> None:
    """Answer `error` in OpenAI's envelope."""
    body = json.dumps(error.body()).encode()
    extra = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(headers or {}),
    }
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
