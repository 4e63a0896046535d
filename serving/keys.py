"""API keys: generated with 256 bits of entropy, stored and compared only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

KEY_PREFIX = "gale-"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6


class KeyRecord(BaseModel):
    """What is kept of a key: never the key itself, only its hash and a short prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^key_[0-9a-f]{12}$")
    name: str = Field(default="default", min_length=1, max_length=64)
    prefix: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    created_at: float


def hash_key(key: str) -> str:
    """The stored form of a key. SHA-256 suffices: keys are random, not passwords."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def generate_key(name: str = "default") -> tuple[str, KeyRecord]:
    """A new key (to show once) and the record to store."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        id="key_" + secrets.token_hex(6),
        name=name,
        prefix=key[:SHOWN_PREFIX_LENGTH],
        hash=hash_key(key),
        created_at=round(time.time(), 3),
    )
    return key, record


def match_key(presented: str, records: Iterable[KeyRecord]) -> KeyRecord | None:
    """The record whose hash matches the presented key, compared in constant time."""
    digest = hash_key(presented)
    found = None
    for record in records:
        # Compare against every record so timing does not reveal which matched.
        if hmac.compare_digest(digest, record.hash):
            found = record
    return found
