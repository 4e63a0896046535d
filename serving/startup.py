"""Where a starting replica is: its start-up phases, as the replica reports them.

A replica reports each phase (`report("loading")`) as it enters it. Each report
is one JSON line appended (and flushed) to a small file beside the replica's
Serve log (`replica_<app>_<deployment>_<id>.startup.jsonl` in Ray's `serve/` log
folder), and one human line in the replica's log. The CLI reads that file
through the dashboard's log API (docs/observability.md says why a file of
its own rather than the Serve log, a metric or the actor's repr): the Serve
log may be buffered and grows with every request; the file has a handful of
lines and outlives the replica, so a failed start can still be explained.

Downloading weights reports progress through `progress_callback()`, a
`Callable[[int, int], None]` (bytes done, bytes total) that whatever downloads
calls as it goes; its lines are written at most once a second, with the rate.

This module imports no ray: the replica (`serving.deployment`) tells it where
to write with `begin()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

STARTING = "starting"
DOWNLOADING = "downloading"
LOADING = "loading"
WARMING_UP = "warming up"
READY = "ready"
FAILED = "failed"
PHASES = (STARTING, DOWNLOADING, LOADING, WARMING_UP, READY, FAILED)
SUFFIX = ".startup.jsonl"
PROGRESS_EVERY_S = 1.0
ERROR_CHARS = 600

logger = logging.getLogger("ray.serve")


def phase_file(replica_log: str) -> str:
    """The phase file beside a replica's Serve log (same folder, same stem)."""
    return replica_log.removesuffix(".log") + SUFFIX


@dataclass(frozen=True)
class Event:
    """One reported phase: its name, when it began (epoch seconds) and its details."""

    phase: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The event as one JSON line (no newline)."""
        return json.dumps({"phase": self.phase, "at": round(self.at, 3), **self.detail})


def parse(text: str) -> list[Event]:
    """The events of a phase file; lines that are not gale's events are skipped."""
    events = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("phase") not in PHASES:
            continue
        at = data.pop("at", None)
        if not isinstance(at, (int, float)):
            continue
        events.append(Event(data.pop("phase"), float(at), data))
    return events


def durations(events: list[Event], until: float | None = None) -> list[tuple[str, float]]:
    """(phase, seconds) for each phase in order, consecutive repeats merged; the last phase
    lasts until `until` (or is 0 when it is `ready`/`failed` or `until` is None)."""
    spans: list[tuple[str, float]] = []
    for current, following in zip(events, [*events[1:], None], strict=True):
        if following is not None:
            end = following.at
        elif current.phase in (READY, FAILED) or until is None:
            end = current.at
        else:
            end = until
        seconds = max(0.0, end - current.at)
        if spans and spans[-1][0] == current.phase:
            spans[-1] = (current.phase, spans[-1][1] + seconds)
        else:
            spans.append((current.phase, seconds))
    return spans


class Reporter:
    """Writes a replica's phases to its phase file (when it has one) and to its log."""

    def __init__(
        self,
        sink: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.time,
        progress_every: float = PROGRESS_EVERY_S,
    ) -> None:
        self._sink, self._clock, self._every = sink, clock, progress_every
        self._lock = threading.Lock()
        self.phase: str | None = None
        self.events: list[Event] = []
        self._download_started: float | None = None
        self._last_progress = float("-inf")

    def report(self, phase: str, **detail: Any) -> None:
        """The replica is now in `phase` (one of PHASES), with these details."""
        if phase not in PHASES:
            raise ValueError(f"unknown start-up phase '{phase}'")
        event = Event(phase, self._clock(), detail)
        with self._lock:
            self.phase = phase
            self.events.append(event)
            if self._sink is not None:
                try:
                    self._sink.write(event.line() + "\n")
                    self._sink.flush()
                except (OSError, ValueError) as error:  # a full disk must not fail the start
                    logger.warning("gale: could not write the start-up phase: %s", error)
        shown = f" ({_words(detail)})" if detail else ""
        logger.info("gale: phase %s%s", phase, shown)

    def download_progress(self, done: int, total: int) -> None:
        """Bytes of the weights downloaded so far: a `downloading` report at most once per
        `progress_every` seconds (and at the end), then back to `loading` once complete."""
        now = self._clock()
        if self._download_started is None:
            self._download_started = now
        complete = total > 0 and done >= total
        if not complete and now - self._last_progress < self._every:
            return
        self._last_progress = now
        spent = now - self._download_started
        rate = done / spent if spent > 0 else 0.0
        self.report(DOWNLOADING, bytes_done=int(done), bytes_total=int(total), bytes_per_s=rate)
        if complete:
            self._download_started = None
            self.report(LOADING)

    def failed(self, error: BaseException) -> str:
        """The start failed in the current phase with `error`; return that phase."""
        phase = self.phase or STARTING
        text = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
        self.report(FAILED, failed_phase=phase, error=text)
        return phase


def _words(detail: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in detail.items())


_current = Reporter()


def begin(reporter: Reporter) -> Reporter:
    """Make `reporter` the one `report` and `progress_callback` write to (one per replica)."""
    global _current
    _current = reporter
    return reporter


def current() -> Reporter:
    """The replica's reporter (one that only logs, before `begin`)."""
    return _current


def report(phase: str, **detail: Any) -> None:
    """The replica is now in `phase`, with these details."""
    _current.report(phase, **detail)


def progress_callback() -> Callable[[int, int], None]:
    """A (bytes done, bytes total) callback for a weights download, reported as `downloading`."""
    return _current.download_progress


def open_beside(log_handlers: list[logging.Handler]) -> TextIO | None:
    """The phase file beside the Serve log file one of these handlers writes, opened to
    append; None when none writes a file (not in a Serve replica)."""
    for handler in log_handlers:
        target = getattr(handler, "target", None) or handler  # Serve buffers in a MemoryHandler
        name = getattr(target, "baseFilename", None)
        if isinstance(name, str) and name.endswith(".log"):
            path = Path(phase_file(name))
            # A new file per start: a restarted replica gets a new id, so a new file anyway.
            return path.open("a", encoding="utf-8")
    return None
