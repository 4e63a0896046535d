"""What `gale logs` reads: each replica's Serve log through the dashboard's log API.

Every replica writes its own log file (gale's lines, Serve's, and one access line
per request) on its node; the Serve REST API names it (`log_file_path`) and the
dashboard serves it (`/api/v0/logs/file`, or `/api/v0/logs/stream` to follow).
Lines are merged across replicas by their timestamps, newest last. Anything
that looks like a gale API key, and the Ray token, is masked before a line
leaves this module.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gale_cli.cluster import ServeClient
from gale_cli.errors import UsageError
from serving import serve_config
from serving.keys import KEY_PREFIX

# A gale key is its prefix and 43 URL-safe characters; mask any run of them, whole or cut.
KEY_PATTERN = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_\-]{6,}")
MASK = "***"
# Serve's log format: "LEVEL YYYY-MM-DD HH:MM:SS,mmm deployment replica -- message" (local time).
TIME_PATTERN = re.compile(r"^[A-Z]+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@dataclass(frozen=True)
class ReplicaLog:
    """Where one replica's log lives."""

    replica_id: str
    state: str
    node_id: str
    filename: str


def mask(line: str, token: str | None) -> str:
    """`line` with gale keys and the Ray token replaced by ***."""
    if token:
        line = line.replace(token, MASK)
    return KEY_PATTERN.sub(KEY_PREFIX + MASK, line)


def line_time(line: str) -> float | None:
    """When Serve wrote `line` (epoch seconds), or None for a line without a timestamp."""
    found = TIME_PATTERN.match(line)
    if found is None:
        return None
    stamp = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    return stamp.timestamp() + int(found.group(2)) / 1000


def parse_since(text: str) -> float:
    """Seconds in a duration like 30s, 10m, 2h or 1d."""
    found = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if found is None:
        raise UsageError(f"--since is '{text}'; give a duration such as 30s, 10m, 2h or 1d")
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def replica_logs(app: dict[str, Any], replica: str | None = None) -> list[ReplicaLog]:
    """The log of each replica of `app` (or only those whose id starts with `replica`)."""
    found = []
    for row in serve_config.model_status(app).get("replicas") or []:
        path, node = row.get("log_file_path"), row.get("node_id")
        if not path or not node:
            continue
        if replica is not None and not str(row.get("replica_id", "")).startswith(replica):
            continue
        found.append(
            ReplicaLog(row.get("replica_id", ""), row.get("state", ""), node, path.lstrip("/"))
        )
    return found


def merge(texts: Iterable[str], since: float | None = None) -> list[str]:
    """The lines of several logs in time order, newest last; with `since`, only later ones.

    A line without a timestamp (a traceback's) keeps the time of the line before it.
    """
    timed: list[tuple[float, int, str]] = []
    for text in texts:
        at = 0.0
        for line in text.splitlines():
            at = line_time(line) or at
            if since is None or at >= since:
                timed.append((at, len(timed), line))
    return [line for _, _, line in sorted(timed)]


class LogReader:
    """Reads the replicas' logs of a deployment through the dashboard."""

    def __init__(self, client: ServeClient) -> None:
        self.client = client

    def replicas(self, name: str, replica: str | None = None) -> list[ReplicaLog]:
        """The deployment's replica logs; UsageError if it or the replica does not exist."""
        app = self.client.get_application(name)
        if app is None:
            raise UsageError(f"no deployment named '{name}' is running", hint="see `gale list`")
        logs = replica_logs(app, replica)
        if replica is not None and not logs:
            known = ", ".join(r.replica_id for r in replica_logs(app)) or "none"
            raise UsageError(f"'{name}' has no replica '{replica}' (replicas: {known})")
        return logs

    def lines(self, logs: list[ReplicaLog], tail: int, since: float | None) -> list[str]:
        """The last `tail` lines of each log, merged newest last and masked."""
        texts = [self.client.log_file(log.node_id, log.filename, tail) for log in logs]
        token = self.client.config.token
        return [mask(line, token) for line in merge(texts, since)]

    def follow(self, logs: list[ReplicaLog], tail: int, since: float | None) -> Iterator[str]:
        """Each log's last `tail` lines (from `since`), then new lines as they are written, masked."""
        lines: queue.Queue[str | BaseException] = queue.Queue()

        def pump(log: ReplicaLog) -> None:
            try:
                for line in self.client.follow_log(log.node_id, log.filename, tail):
                    lines.put(line)
            except BaseException as error:  # handed to the caller's thread to raise
                lines.put(error)

        for log in logs:
            threading.Thread(target=pump, args=(log,), daemon=True).start()
        token = self.client.config.token
        while True:
            item = lines.get()
            if isinstance(item, BaseException):
                raise item
            at = line_time(item)
            if since is None or at is None or at >= since:
                yield mask(item, token)
