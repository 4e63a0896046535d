"""API keys: generated with 256 bits of entropy, stored and compared only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

KEY_PREFIX = "gale-"
# A key's own limits (serving.limits); each None falls back to the deployment's default.
LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "token_budget")
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6


class KeyRecord(BaseModel):
    """What is kept of a key: never the key itself, only its hash and a short prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^key_[0-9a-f]{12}$")
    name: str = Field(default="default", min_length=1, max_length=64)
    prefix: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    created_at: float
    expires_at: float | None = None
    """When the key stops working (seconds since the epoch); None: never."""
    # Per-key limits (serving.limits); None: the deployment's default, if it has one.
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens (prompt + completion) per minute."""
    concurrency: int | None = Field(default=None, ge=1)
    """Requests at once."""
    token_budget: int | None = Field(default=None, ge=1)
    """Tokens (prompt + completion) in all."""

    def stored(self) -> dict[str, object]:
        """The record as configs keep it: limits it leaves to the deployment are left out."""
        unset = {field for field in LIMIT_FIELDS if getattr(self, field) is None}
        return self.model_dump(exclude=unset)

    def expired(self, now: float | None = None) -> bool:
        """Whether the key's time is up."""
        return (
            self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at
        )


DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration like 30m, 12h or 7d; ValueError when it is not one."""
    match = DURATION.match(text.lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"'{text}' is not a duration: use a number and s, m, h or d, e.g. 30m, 12h, 7d"
        )
    return float(int(match.group(1)) * UNIT_SECONDS[match.group(2)])


def hash_key(key: str) -> str:
    """The stored form of a key. SHA-256 suffices: keys are random, not passwords."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key(name: str = "default", expires_in: float | None = None) -> tuple[str, KeyRecord]:
    """A new key (to show once) and the record to store; `expires_in` seconds from now, if given."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    record = KeyRecord(
        id="key_" + secrets.token_hex(6),
        name=name,
        prefix=key[:SHOWN_PREFIX_LENGTH],
        hash=hash_key(key),
        created_at=round(now, 3),
        expires_at=round(now + expires_in, 3) if expires_in is not None else None,
    )
    return key, record


def match_key(
    presented: str, records: Iterable[KeyRecord], now: float | None = None
) -> KeyRecord | None:
    """The unexpired record whose hash matches the presented key, compared in constant time."""
    digest = hash_key(presented)
    now = time.time() if now is None else now
    found = None
    for record in records:
        # Compare against every record so timing does not reveal which matched.
        if hmac.compare_digest(digest, record.hash) and not record.expired(now):
            found = record
    return found
