"""Measuring each request of the app: an ASGI middleware and the per-request `Measure`.

The middleware counts every response by status (whatever route or error made
it) and keeps the running count; routes record tokens and stream timings on the
`Measure` it leaves in the request's state. The key id is worked out once per
request, at the end, from the same hashes the key check uses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from serving.health import Progress
from serving.keys import match_key
from serving.metrics import NO_KEY, Metrics
from serving.replica_state import ServingState

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_KEY = "gale_measure"


class Measure:
    """One request's labels and clock, on which routes record what only they know."""

    def __init__(self, metrics: Metrics, state: ServingState, authorization: str) -> None:
        self.metrics, self.deployment = metrics, state.name
        self.started = time.monotonic()
        self._state, self._authorization = state, authorization
        self._key_id: str | None = None
        self._first_at: float | None = None

    @property
    def key_id(self) -> str:
        """The id of the key this request presented, or NO_KEY."""
        if self._key_id is None:
            scheme, _, key = self._authorization.partition(" ")
            record = None
            if scheme.lower() == "bearer" and key.strip():
                record = match_key(key.strip(), self._state.keys)
            self._key_id = record.id if record is not None else NO_KEY
        return self._key_id

    def tokens(self, prompt: int, completion: int) -> None:
        """A generation finished with this usage."""
        self.metrics.tokens(self.deployment, self.key_id, prompt, completion)

    def first_token(self) -> None:
        """A stream's first token is ready now."""
        self._first_at = time.monotonic()
        self.metrics.first_token(self.deployment, self.key_id, self._first_at - self.started)

    def stream_done(self, prompt: int, completion: int) -> None:
        """A stream ended with this usage: its tokens and time per output token."""
        self.tokens(prompt, completion)
        if self._first_at is not None and completion > 1:
            each = (time.monotonic() - self._first_at) / (completion - 1)
            self.metrics.per_output_token(self.deployment, self.key_id, each)


def measure_of(request: Request) -> Measure:
    """The Measure the middleware left for this request."""
    measure: Measure = request.scope["state"][STATE_KEY]
    return measure


class MeasureRequests:
    """ASGI middleware: a Measure per HTTP request, and its status and duration when done."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, state: ServingState, progress: Progress | None = None
    ) -> None:
        self.app, self.metrics, self.state = app, metrics, state
        self.progress = progress or Progress()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the app, recording its outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        measure = Measure(self.metrics, self.state, authorization)
        scope.setdefault("state", {})[STATE_KEY] = measure
        status = 500  # what the server answers if the app raises before responding

        posted = scope["method"] == "POST"

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif posted and status == 200:  # an answer moved: the engine works (serving.health)
                self.progress.note()
            await send(message)

        self.metrics.request_started(measure.deployment)
        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.monotonic() - measure.started
            self.metrics.request_finished(measure.deployment, measure.key_id, status, seconds)
