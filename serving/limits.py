"""Per-key limits as pure rules: what a key may do, and whether a replica admits a request.

A key's limits are its own (`KeyRecord.rpm` …) or else the deployment's defaults
(`key_rpm` …). Rates are counted in fixed windows of `window_s` seconds (60 by
default), each allowing its share of the per-minute limit. What a replica knows of
a key is a `KeyView`: its own counts exactly, the other replicas' as of the last
sync with the deployment's ledger (`serving.ledger`). docs/limits.md says how
exact each limit is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from serving.keys import KeyRecord

MINUTE = 60.0
# A lease is more than the one request that asked only while the key is this many
# times its share of what is left away from its limit: near the limit, every
# request asks the ledger, so the limit is exact.
LEASE_SHARE = 4
# Seconds a refusal for being over a concurrency limit or a fair share asks the client to wait.
BUSY_RETRY_S = 1


@dataclass(frozen=True)
class Limits:
    """A key's effective limits; None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    token_budget: int | None = None
    window_s: int = 60

    @property
    def any(self) -> bool:
        """Whether the key has any limit."""
        return any(v is not None for v in (self.rpm, self.tpm, self.concurrency, self.token_budget))

    @property
    def rated(self) -> bool:
        """Whether the key has a rate limit (its answers then carry the x-ratelimit headers)."""
        return self.rpm is not None or self.tpm is not None

    def per_window(self, per_minute: int) -> int:
        """A per-minute limit's allowance in one window (at least 1)."""
        return max(1, round(per_minute * self.window_s / MINUTE))


def limits_of(record: KeyRecord, defaults: Any) -> Limits:
    """The key's own limits, each falling back to the deployment's default (`key_*`)."""

    def pick(own: int | None, default: int | None) -> int | None:
        return own if own is not None else default

    return Limits(
        rpm=pick(record.rpm, defaults.key_rpm),
        tpm=pick(record.tpm, defaults.key_tpm),
        concurrency=pick(record.concurrency, defaults.key_concurrency),
        token_budget=pick(record.token_budget, defaults.key_token_budget),
        window_s=int(defaults.key_limit_window),
    )


def window_at(now: float, window_s: int) -> int:
    """The number of the window `now` falls in."""
    return int(now // window_s)


def reset_after(now: float, window_s: int) -> float:
    """Seconds until the window `now` falls in ends."""
    return window_s - now % window_s


def lease_size(remaining: int, replicas: int) -> int:
    """Requests to grant a replica that asks for one when `remaining` are left in the window.

    Far from the limit a replica gets a share of what is left, so it asks again only
    after many requests; near it (fewer than 2 extra to give), exactly the one.
    """
    if remaining <= 0:
        return 0
    extra = (remaining - 1) // (LEASE_SHARE * max(1, replicas))
    return 1 + (extra if extra >= 2 else 0)


def fair_share(batch_size: int, running: dict[str, int], key_id: str) -> int | None:
    """The most requests `key_id` may hold on a saturated replica, or None when it is not.

    Saturated: at least a batch of requests running, from two or more keys (counting
    this one). Each key's share is then the batch divided evenly among them.
    """
    active = {k for k, n in running.items() if n > 0} | {key_id}
    if sum(running.values()) < batch_size or len(active) < 2:
        return None
    return max(1, batch_size // len(active))


@dataclass
class KeyView:
    """What one replica knows of one key in the current window."""

    window: int = -1
    granted: int = 0  # requests this replica may admit in the window (its leases)
    admitted: int = 0  # requests it admitted in the window
    window_requests: int = 0  # every replica's admitted requests in the window, as last synced
    window_tokens: int = 0  # every replica's tokens in the window, as last synced
    used_tokens: int = 0  # every replica's tokens ever, as last synced (the budget's use)
    unsynced_requests: int = 0  # this replica's admitted requests not yet synced
    unsynced_tokens: int = 0  # this replica's tokens not yet synced
    running: int = 0  # this replica's requests of the key in flight
    others_running: int = 0  # the other replicas', as last synced

    def roll(self, window: int) -> None:
        """Start counting a new window if `window` is not the current one."""
        if window != self.window:
            self.window, self.granted, self.admitted = window, 0, 0
            self.window_requests = self.window_tokens = 0

    @property
    def requests(self) -> int:
        """The key's requests in the window, as this replica knows them."""
        return self.window_requests + self.unsynced_requests

    @property
    def tokens(self) -> int:
        """The key's tokens in the window, as this replica knows them."""
        return self.window_tokens + self.unsynced_tokens


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: a 429 in OpenAI's shape."""

    message: str
    type: str = "rate_limit_exceeded"
    code: str = "rate_limit_exceeded"
    retry_after: float | None = None


def check(limits: Limits, view: KeyView, now: float, share: int | None = None) -> Refusal | None:
    """The refusal for a new request of this key, if any, apart from the request rate.

    The request rate needs a lease from the ledger (`needs_lease`); everything here
    is decided from the replica's own view, with no round trip.
    """
    if limits.token_budget is not None and view.used_tokens + view.unsynced_tokens >= (
        limits.token_budget
    ):
        return Refusal(
            f"this key has used its budget of {limits.token_budget} tokens",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if limits.concurrency is not None and view.running + view.others_running >= limits.concurrency:
        return Refusal(
            f"this key may have {limits.concurrency} requests at once; wait for one to finish",
            retry_after=BUSY_RETRY_S,
        )
    if limits.tpm is not None and view.tokens >= limits.per_window(limits.tpm):
        return Refusal(
            f"this key's token limit of {_rate(limits, limits.tpm)} is spent; "
            f"try again in {reset_after(now, limits.window_s):.0f}s",
            retry_after=reset_after(now, limits.window_s),
        )
    if share is not None and view.running >= share:
        return Refusal(
            f"the deployment is busy and this key already holds its fair share of {share} "
            "requests at once; try again shortly",
            retry_after=BUSY_RETRY_S,
        )
    return None


def needs_lease(limits: Limits, view: KeyView) -> bool:
    """Whether admitting one more request needs more allowance from the ledger."""
    return limits.rpm is not None and view.admitted >= view.granted


def rate_refusal(limits: Limits, now: float) -> Refusal:
    """The refusal for a key whose requests in this window are spent."""
    assert limits.rpm is not None
    wait = reset_after(now, limits.window_s)
    return Refusal(
        f"this key's request limit of {_rate(limits, limits.rpm)} is spent; "
        f"try again in {wait:.0f}s",
        retry_after=wait,
    )


def _rate(limits: Limits, per_minute: int) -> str:
    if limits.window_s == MINUTE:
        return f"{per_minute} per minute"
    return f"{per_minute} per minute ({limits.per_window(per_minute)} per {limits.window_s}s)"


def headers(limits: Limits, view: KeyView, now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for an answer to a rate-limited key (else none)."""
    found: dict[str, str] = {}
    reset = duration_text(reset_after(now, limits.window_s))
    for kind, per_minute, used in (
        ("requests", limits.rpm, view.requests),
        ("tokens", limits.tpm, view.tokens),
    ):
        if per_minute is None:
            continue
        allowance = limits.per_window(per_minute)
        found[f"x-ratelimit-limit-{kind}"] = str(allowance)
        found[f"x-ratelimit-remaining-{kind}"] = str(max(0, allowance - used))
        found[f"x-ratelimit-reset-{kind}"] = reset
    return found


def refusal_headers(refusal: Refusal) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) for a refusal that will pass."""
    if refusal.retry_after is None:
        return {}
    return {"retry-after": str(max(1, math.ceil(refusal.retry_after)))}


def duration_text(seconds: float) -> str:
    """A reset time as OpenAI writes it: `1m0s`, `6s`, `250ms`."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
