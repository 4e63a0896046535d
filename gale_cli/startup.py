"""Where each starting replica is, why a start failed, and how long the last start took.

Read through the dashboard only: Serve's REST API lists the replicas (with, once
a node holds one, its node and its log file); the phase file each replica
writes beside its log (`serving.startup`) is read with the dashboard's log API.
A replica that no node holds yet is waiting for hardware; one that a node holds
but that has reported nothing is starting (its process and imports).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from gale_cli.cluster import ServeClient
from gale_cli.errors import AuthError, ClusterError, ClusterUnreachable
from gale_cli.logs import mask
from gale_cli.progress import Progress, progress_of
from serving import serve_config
from serving.startup import FAILED, READY, STARTING, SUFFIX, Event, durations, parse, phase_file

WAITING = "waiting for hardware"
LAST_LINES = 12
# Replicas Serve reports while they start (or restart after a failure).
STARTING_STATES = ("STARTING", "RECOVERING", "PENDING_MIGRATION")


@dataclass(frozen=True)
class ReplicaStart:
    """One starting replica: its phase, since when (epoch seconds), and the phase's details."""

    replica_id: str
    phase: str
    since: float | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self, now: float) -> dict[str, Any]:
        """The replica's phase with the seconds spent in it so far."""
        seconds = None if self.since is None else round(max(0.0, now - self.since), 1)
        return {
            "replica_id": self.replica_id,
            "phase": self.phase,
            "seconds": seconds,
            **self.detail,
        }


@dataclass(frozen=True)
class Failure:
    """A start that failed: in which phase, with which error, and the replica's last lines."""

    replica_id: str
    phase: str
    error: str
    log: list[str]

    def to_json(self) -> dict[str, Any]:
        """The failure as JSON."""
        return {
            "replica_id": self.replica_id,
            "phase": self.phase,
            "error": self.error,
            "log": self.log,
        }

    def text(self, name: str) -> str:
        """The failure for a person: phase, error, then the replica's own last lines."""
        lines = "".join(f"\n  {line}" for line in self.log)
        tail = f"\nLast lines of replica {self.replica_id}'s log:{lines}" if lines else ""
        return f"'{name}' failed while {self.phase}: {self.error}{tail}"


def replica_start(
    row: dict[str, Any], events: list[Event] | None, waiting: str | None
) -> ReplicaStart:
    """A replica's phase from its Serve row and the events of its phase file."""
    replica_id = str(row.get("replica_id", ""))
    started = row.get("start_time_s")
    if not row.get("node_id") or not row.get("log_file_path"):
        return ReplicaStart(replica_id, WAITING, started, {"missing": waiting} if waiting else {})
    if not events:
        return ReplicaStart(replica_id, STARTING, started)
    last = events[-1]
    return ReplicaStart(replica_id, last.phase, last.at, dict(last.detail))


def _size(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def duration(seconds: float) -> str:
    """'42s' or '3m05s'."""
    whole = max(0, int(seconds))
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def describe(start: ReplicaStart, now: float | None = None) -> str:
    """'replica ab12: downloading 1.2 GB of 3.4 GB at 56.0 MB/s, 20s' (no time when `now`
    is None)."""
    words = start.phase
    detail = start.detail
    if start.phase == "downloading" and detail.get("bytes_total"):
        words += f" {_size(detail.get('bytes_done', 0))} of {_size(detail['bytes_total'])}"
        if detail.get("bytes_per_s"):
            words += f" at {_size(detail['bytes_per_s'])}/s"
    elif start.phase == WAITING and detail.get("missing"):
        words += f" ({detail['missing']})"
    if now is not None and start.since is not None:
        words += f", {duration(max(0.0, now - start.since))}"
    return f"replica {start.replica_id[:8]}: {words}"


def _gale_rows(app: dict[str, Any]) -> list[dict[str, Any]]:
    deployment = (app.get("deployments") or {}).get(serve_config.DEPLOYMENT_NAME) or {}
    return list(deployment.get("replicas") or [])


class StartupReader:
    """Reads starting replicas' phases, failures and the last start through the dashboard."""

    def __init__(self, client: ServeClient, clock: Callable[[], float] = time.time) -> None:
        self.client, self.clock = client, clock
        self._seen: dict[str, tuple[str, str]] = {}
        """Replica id → (node, log file) of every replica seen starting: read on failure."""

    def _events(self, node_id: str, log_file: str) -> list[Event] | None:
        """The events of the phase file beside `log_file`, or None where it is not there yet."""
        try:
            text = self.client.log_file(node_id, phase_file(log_file).lstrip("/"), 1000)
        except (ClusterUnreachable, AuthError):
            raise
        except ClusterError:  # not written yet, or the node is gone
            return None
        return parse(text)

    def starting(self, app: dict[str, Any], waiting: str | None = None) -> list[ReplicaStart]:
        """Each replica of `app` that is starting, with its phase."""
        found = []
        for row in _gale_rows(app):
            if row.get("state") not in STARTING_STATES:
                continue
            node, log_file = row.get("node_id"), row.get("log_file_path")
            events = None
            if node and log_file:
                self._seen[str(row.get("replica_id", ""))] = (node, log_file)
                events = self._events(node, log_file)
            found.append(replica_start(row, events, waiting))
        return found

    def progress(self, app: dict[str, Any]) -> Progress:
        """The application's progress with each starting replica's phase."""
        progress = progress_of(app, self.client.node_resources)
        starts = self.starting(app, progress.waiting_for_hardware)
        return replace(progress, starting=tuple(starts))

    def _seen_files(self) -> Iterable[tuple[str, str, str]]:
        """(replica id, node, phase file) of every replica this reader saw starting."""
        for replica_id, (node, log_file) in self._seen.items():
            yield replica_id, node, phase_file(log_file).lstrip("/")

    def _listed_files(self, name: str) -> Iterable[tuple[str, str, str]]:
        """(replica id, node, phase file) of every start of `name` the nodes keep a file of."""
        stem = f"replica_{name}_{serve_config.DEPLOYMENT_NAME}_"
        for node in self.client.node_ids():
            # The dashboard globs with pathlib: `*` stays within the folder.
            for path in self.client.list_log_files(node, f"serve/{stem}*{SUFFIX}"):
                replica_id = path.rsplit("/", 1)[-1].removeprefix(stem).removesuffix(SUFFIX)
                yield replica_id, node, path

    def failure(self, name: str, since: float | None = None) -> Failure | None:
        """The latest failed start of `name` (after `since`): its phase, error and the
        replica's last lines.

        From the replicas seen starting; when none of them failed (or none was seen:
        another command deployed it), from the files the nodes keep.
        """
        return self._failure(self._seen_files(), since) or self._failure(
            self._listed_files(name), since
        )

    def _failure(
        self, files: Iterable[tuple[str, str, str]], since: float | None
    ) -> Failure | None:
        latest: tuple[float, str, str, str, Event] | None = None
        for replica_id, node, path in files:
            try:
                events = parse(self.client.log_file(node, path, 1000))
            except (ClusterUnreachable, AuthError):
                raise
            except ClusterError:
                continue
            failed = [e for e in events if e.phase == FAILED and e.at >= (since or 0)]
            if failed and (latest is None or failed[-1].at > latest[0]):
                latest = (failed[-1].at, replica_id, node, path, failed[-1])
        if latest is None:
            return None
        _, replica_id, node, path, event = latest
        log = path.removesuffix(SUFFIX) + ".log"
        try:
            text = self.client.log_file(node, log, LAST_LINES)
        except (ClusterUnreachable, AuthError):
            raise
        except ClusterError:
            text = ""
        token = self.client.config.token
        return Failure(
            replica_id,
            str(event.detail.get("failed_phase", STARTING)),
            mask(str(event.detail.get("error", "")), token),
            [mask(line, token) for line in text.splitlines()[-LAST_LINES:]],
        )

    def last_start(self, app: dict[str, Any]) -> dict[str, Any] | None:
        """How long the latest start of a running replica took, phase by phase."""
        best: tuple[float, str, list[Event]] | None = None
        for row in _gale_rows(app):
            node, log_file = row.get("node_id"), row.get("log_file_path")
            if row.get("state") != "RUNNING" or not node or not log_file:
                continue
            events = self._events(node, log_file) or []
            ready = [event for event in events if event.phase == READY]
            if ready and (best is None or ready[-1].at > best[0]):
                best = (ready[-1].at, str(row.get("replica_id", "")), events)
        if best is None:
            return None
        ready_at, replica_id, events = best
        started = next(
            (r.get("start_time_s") for r in _gale_rows(app) if r.get("replica_id") == replica_id),
            None,
        )
        phases = [
            {"phase": phase, "seconds": round(seconds, 1)}
            for phase, seconds in durations(events)
            if phase != READY
        ]
        if isinstance(started, (int, float)) and started < events[0].at:
            # Before the first report: the worker process starting and importing.
            phases.insert(0, {"phase": STARTING, "seconds": round(events[0].at - started, 1)})
        first = started if isinstance(started, (int, float)) else events[0].at
        return {
            "replica_id": replica_id,
            "finished_at": ready_at,
            "total_s": round(ready_at - min(first, events[0].at), 1),
            "phases": phases,
        }

    def status(self, name: str, app: dict[str, Any]) -> tuple[Progress, Failure | None]:
        """What `gale status` shows: the progress with each starting replica's phase, and
        why the start failed when it did."""
        progress = self.progress(app)
        failure = None
        if app.get("status") == "DEPLOY_FAILED":
            # Only this revision's failures, not an earlier deployment's of the same name.
            failure = self.failure(name, app.get("last_deployed_time_s"))
        return progress, failure
