"""The deployment's ledger: per-key counts shared by its replicas, and its usage by the hour.

One ledger per application (held by `serving.ledger_actor` in Ray). Replicas send
it a `Report` of what they did since their last one every `SYNC_S` seconds and get
back a `Snapshot` of every replica's counts; near a key's request limit they ask it
for leases (`acquire`), so that limit is never exceeded. Pure Python: no Ray here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.limits import lease_size

# Seconds between a replica's reports; token and concurrency limits see the other
# replicas' counts this late at most (plus the report's round trip).
SYNC_S = 0.25
# A replica not heard from for this long no longer counts (it died or was stopped).
REPLICA_GONE_S = 10.0
# Hours of usage kept (about 31 days); older hours are dropped.
KEEP_HOURS = 24 * 31
HOUR = 3600


@dataclass
class KeyReport:
    """One key's counts on one replica since its last report (`running`: now)."""

    admitted: int = 0
    served: int = 0
    prompt: int = 0
    completion: int = 0
    running: int = 0


@dataclass
class Report:
    """What a replica did since its last report."""

    replica: str
    hardware: str
    seconds: float  # of the replica's life since its last report
    window_s: int
    keys: dict[str, KeyReport] = field(default_factory=dict)
    watched: tuple[str, ...] = ()  # limited keys whose counts the replica wants back


@dataclass(frozen=True)
class KeyCounts:
    """Every replica's counts of one key, as the ledger has them."""

    requests: int  # admitted in the window
    tokens: int  # in the window
    used: int  # tokens ever (since the ledger started)
    others_running: int  # in flight on the other replicas


@dataclass(frozen=True)
class Snapshot:
    """The ledger's answer to a report: its window and the watched keys' counts."""

    window: int
    keys: dict[str, KeyCounts]


@dataclass
class Usage:
    """A key's usage in one hour."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0


class Ledger:
    """Counts per key and window, leases, usage per key and hour, replica-seconds per hardware."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.granted: dict[tuple[str, int, int], int] = defaultdict(int)
        self.requests: dict[tuple[str, int, int], int] = defaultdict(int)
        self.tokens: dict[tuple[str, int, int], int] = defaultdict(int)
        self.used: dict[str, int] = defaultdict(int)
        self.running: dict[str, dict[str, int]] = {}
        self.seen: dict[str, float] = {}
        self.usage: dict[tuple[str, int], Usage] = defaultdict(Usage)
        self.replica_seconds: dict[tuple[str, int], float] = defaultdict(float)

    def live_replicas(self) -> list[str]:
        """Replicas heard from recently."""
        now = self.clock()
        return [r for r, at in self.seen.items() if now - at < REPLICA_GONE_S]

    def acquire(self, key_id: str, window_s: int, window: int, allowance: int, replica: str) -> int:
        """Grant `replica` requests of `key_id` in `window` (0 when the window's are spent)."""
        self.seen.setdefault(replica, self.clock())
        slot = (key_id, window_s, window)
        size = lease_size(allowance - self.granted[slot], len(self.live_replicas()))
        self.granted[slot] += size
        return size

    def sync(self, report: Report) -> Snapshot:
        """Take a replica's report; answer with the watched keys' counts."""
        now = self.clock()
        self.seen[report.replica] = now
        window, hour = int(now // report.window_s), int(now // HOUR)
        self.replica_seconds[report.hardware, hour] += report.seconds
        running = self.running.setdefault(report.replica, {})
        for key_id, counts in report.keys.items():
            slot = (key_id, report.window_s, window)
            self.requests[slot] += counts.admitted
            tokens = counts.prompt + counts.completion
            self.tokens[slot] += tokens
            self.used[key_id] += tokens
            usage = self.usage[key_id, hour]
            usage.requests += counts.served
            usage.prompt += counts.prompt
            usage.completion += counts.completion
            running[key_id] = counts.running
        live = set(self.live_replicas())
        answer = {}
        for key_id in report.watched:
            slot = (key_id, report.window_s, window)
            others = sum(
                n.get(key_id, 0)
                for r, n in self.running.items()
                if r != report.replica and r in live
            )
            answer[key_id] = KeyCounts(
                self.requests.get(slot, 0),
                self.tokens.get(slot, 0),
                self.used.get(key_id, 0),
                others,
            )
        return Snapshot(window, answer)

    def prune(self) -> None:
        """Forget windows before the current one, hours older than KEEP_HOURS, gone replicas."""
        now = self.clock()
        for table in (self.granted, self.requests, self.tokens):
            for slot in [s for s in table if s[2] < int(now // s[1]) - 1]:
                del table[slot]
        oldest = int(now // HOUR) - KEEP_HOURS
        for usage_table in (self.usage, self.replica_seconds):
            for row in [r for r in usage_table if r[1] < oldest]:
                del usage_table[row]  # type: ignore[attr-defined]
        for replica in [r for r, at in self.seen.items() if now - at > 6 * REPLICA_GONE_S]:
            del self.seen[replica]
            self.running.pop(replica, None)
