"""A replica's side of per-key limits: admit or refuse each request, sync counts in batches.

`Limiter` keeps a `KeyView` per key and decides from it without a round trip,
except for a key near its request limit, which asks the ledger for leases. A
background task (`run`) sends the ledger what the replica did every `SYNC_S`
seconds and takes back the other replicas' counts. `LimitRequests` is the ASGI
middleware that applies it: a 429 in OpenAI's shape, and the x-ratelimit-*
headers on every answer to a rate-limited key, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from serving import limits as rules
from serving.keys import KeyRecord, match_key
from serving.ledger import SYNC_S, KeyReport, Ledger, Report, Snapshot
from serving.limits import KeyView, Limits, Refusal
from serving.metrics import NO_KEY, Metrics
from serving.openai_types import APIError
from serving.replica_state import ServingState

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("ray.serve")


class LedgerClient(Protocol):
    """How a replica reaches its deployment's ledger."""

    async def acquire(
        self, key_id: str, window_s: int, window: int, allowance: int, replica: str
    ) -> int:
        """Grant requests of a key in a window (`Ledger.acquire`)."""

    async def sync(self, report: Report) -> Snapshot:
        """Send a report, get the counts back (`Ledger.sync`)."""


class LocalLedger:
    """A ledger in the replica's own process: one replica, or tests without Ray."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()

    async def acquire(
        self, key_id: str, window_s: int, window: int, allowance: int, replica: str
    ) -> int:
        """Grant from the in-process ledger."""
        return self.ledger.acquire(key_id, window_s, window, allowance, replica)

    async def sync(self, report: Report) -> Snapshot:
        """Sync with the in-process ledger."""
        return self.ledger.sync(report)


class Limiter:
    """One replica's admission of requests by key, and its batched reports to the ledger."""

    def __init__(
        self,
        state: ServingState,
        ledger: LedgerClient,
        replica: str,
        hardware: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state, self.ledger, self.replica, self.hardware = state, ledger, replica, hardware
        self.clock = clock
        self.views: dict[str, KeyView] = {}
        self.running: dict[str, int] = {}
        self._pending: dict[str, KeyReport] = {}
        self._last_report = clock()
        self._task: asyncio.Task[None] | None = None

    def limits(self, record: KeyRecord) -> Limits:
        """The key's effective limits under the deployment's current defaults."""
        return rules.limits_of(record, self.state.key_limits)

    def view(self, key_id: str, window_s: int) -> KeyView:
        """This replica's view of a key, rolled to the current window."""
        view = self.views.setdefault(key_id, KeyView())
        view.roll(rules.window_at(self.clock(), window_s))
        return view

    def _report(self, key_id: str) -> KeyReport:
        return self._pending.setdefault(key_id, KeyReport())

    async def admit(self, record: KeyRecord) -> Refusal | None:
        """Admit a request of this key (it then runs until `release`) or say why not."""
        limits = self.limits(record)
        view = self.view(record.id, limits.window_s)
        share = rules.fair_share(self.state.parameters.batch_size, self.running, record.id)
        refusal = rules.check(limits, view, self.clock(), share) if limits.any or share else None
        if refusal is not None:
            return refusal
        if rules.needs_lease(limits, view):
            assert limits.rpm is not None
            window = view.window
            try:
                granted = await self.ledger.acquire(
                    record.id, limits.window_s, window, limits.per_window(limits.rpm), self.replica
                )
            except Exception as error:  # the ledger restarting: serve rather than refuse
                logger.warning("gale: no lease from the ledger, admitting: %s", error)
                granted = 1
            view = self.view(record.id, limits.window_s)
            if view.window == window:
                view.granted += granted
            if granted == 0 or view.window != window:
                # The ledger has given out the whole window: none remain, whatever was synced.
                spent = limits.per_window(limits.rpm) - view.unsynced_requests
                view.window_requests = max(view.window_requests, spent)
                return rules.rate_refusal(limits, self.clock())
        view.admitted += 1
        view.unsynced_requests += 1
        view.running += 1
        self.running[record.id] = self.running.get(record.id, 0) + 1
        self._report(record.id).admitted += 1
        return None

    def release(self, key_id: str) -> None:
        """An admitted request finished."""
        self.running[key_id] -= 1
        if key_id in self.views:
            self.views[key_id].running -= 1

    def served(self, key_id: str) -> None:
        """A request of this key was answered successfully (usage)."""
        self._report(key_id).served += 1

    def tokens(self, key_id: str, prompt: int, completion: int) -> None:
        """A request of this key used these tokens (limits and usage)."""
        report = self._report(key_id)
        report.prompt += prompt
        report.completion += completion
        if key_id in self.views:
            self.views[key_id].unsynced_tokens += prompt + completion

    async def sync(self) -> None:
        """Send what happened since the last report; take back every replica's counts."""
        now = self.clock()
        pending, self._pending = self._pending, {}
        for key_id, counts in pending.items():
            counts.running = self.running.get(key_id, 0)
        for key_id, running in self.running.items():
            if running and key_id not in pending:
                pending[key_id] = KeyReport(running=running)
        window_s = int(self.state.key_limits.key_limit_window)
        watched = tuple(k.id for k in self.state.keys if self.limits(k).any)
        sent = {k: (v.unsynced_requests, v.unsynced_tokens) for k, v in self.views.items()}
        for view in self.views.values():
            view.unsynced_requests = view.unsynced_tokens = 0
        seconds = now - self._last_report
        try:
            snapshot = await self.ledger.sync(
                Report(self.replica, self.hardware, seconds, window_s, pending, watched)
            )
        except Exception:
            # Keep the counts for the next report; the limits meanwhile use what is known.
            self._merge_back(pending, sent)
            raise
        self._last_report = now
        window = rules.window_at(self.clock(), window_s)
        for key_id, known in snapshot.keys.items():
            view = self.view(key_id, window_s)
            view.used_tokens = known.used
            view.others_running = known.others_running
            if snapshot.window == window:
                # Counts within a window only grow; a refused lease may have raised ours.
                view.window_requests = max(view.window_requests, known.requests)
                view.window_tokens = known.tokens

    def _merge_back(self, pending: dict[str, KeyReport], sent: dict[str, tuple[int, int]]) -> None:
        for key_id, report in pending.items():
            mine = self._report(key_id)
            for name in ("admitted", "served", "prompt", "completion"):
                setattr(mine, name, getattr(mine, name) + getattr(report, name))
        for key_id, (requests, tokens) in sent.items():
            if key_id in self.views:
                self.views[key_id].unsynced_requests += requests
                self.views[key_id].unsynced_tokens += tokens

    async def run(self, interval: float = SYNC_S) -> None:
        """Sync every `interval` seconds until cancelled; a failed sync is logged and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the ledger restarting: retried at the next interval
                logger.warning("gale: usage sync failed, retrying: %s", error)

    def start(self) -> None:
        """Start the background sync on the running event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())


class LedgerMetrics:
    """`Metrics` that also tells the limiter each request's tokens (then passes them on)."""

    def __init__(self, inner: Metrics, limiter: Limiter) -> None:
        self.inner, self.limiter = inner, limiter

    def request_started(self, deployment: str) -> None:
        """Pass on."""
        self.inner.request_started(deployment)

    def request_finished(self, deployment: str, key_id: str, status: int, seconds: float) -> None:
        """Pass on."""
        self.inner.request_finished(deployment, key_id, status, seconds)

    def tokens(self, deployment: str, key_id: str, prompt: int, completion: int) -> None:
        """Charge the key, and pass on."""
        if key_id != NO_KEY:
            self.limiter.tokens(key_id, prompt, completion)
        self.inner.tokens(deployment, key_id, prompt, completion)

    def first_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Pass on."""
        self.inner.first_token(deployment, key_id, seconds)

    def per_output_token(self, deployment: str, key_id: str, seconds: float) -> None:
        """Pass on."""
        self.inner.per_output_token(deployment, key_id, seconds)


class LimitRequests:
    """ASGI middleware: admit each POST by its key's limits; rate-limit headers on answers."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request with a 429, or serve it and count it."""
        record = _record(scope, self.limiter.state) if scope["type"] == "http" else None
        if record is None:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        limits = limiter.limits(record)
        generates = scope["method"] == "POST"
        if generates:
            refusal = await limiter.admit(record)
            if refusal is not None:
                view = limiter.view(record.id, limits.window_s)
                await _refuse(send, refusal, limits, view, limiter.clock())
                return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                if generates and int(message["status"]) < 400:
                    limiter.served(record.id)
                if limits.rated:
                    view = limiter.view(record.id, limits.window_s)
                    extra = rules.headers(limits, view, limiter.clock())
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.encode(), v.encode()) for k, v in extra.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if generates:
                limiter.release(record.id)


def _record(scope: Scope, state: ServingState) -> KeyRecord | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return match_key(key.strip(), state.keys)
    return None


async def _refuse(send: Send, refusal: Refusal, limits: Limits, view: KeyView, now: float) -> None:
    """Answer a 429 in OpenAI's envelope, with Retry-After and the rate-limit headers."""
    error = APIError(429, refusal.message, code=refusal.code, type=refusal.type)
    body = json.dumps(error.body()).encode()
    extra = {
        "content-type": "application/json",
        **rules.refusal_headers(refusal),
        **(rules.headers(limits, view, now) if limits.rated else {}),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [(k.encode(), v.encode()) for k, v in extra.items()]
            + [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
