"""Local state in SQLite ($GALE_HOME/state.db): what the cluster cannot keep.

Revision history of each deployment, the spec and key records of deployments
that are undeployed (or lost with a cluster), so they come back as they were.
Every change is one transaction: never a half-written file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.keys import KeyRecord
from serving.spec import DeploymentSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    keys        TEXT NOT NULL,
    deployed    INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    name        TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    action      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (name, revision)
);
CREATE TABLE IF NOT EXISTS seen (
    name        TEXT PRIMARY KEY,
    session     TEXT NOT NULL,
    seen_at     REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Record:
    """What local state knows of one deployment."""

    spec: DeploymentSpec
    keys: list[KeyRecord]
    deployed: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Revision:
    """One entry of a deployment's history."""

    revision: int
    spec: DeploymentSpec
    action: str
    created_at: float


class State:
    """gale's local state; each public method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private(self.path)
        # executescript commits on its own, so the schema is made outside _connect().
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def get(self, name: str) -> Record | None:
        """The record of one deployment, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT spec, keys, deployed, created_at, updated_at FROM deployments WHERE name=?",
                (name,),
            ).fetchone()
        return _record(row) if row else None

    def all(self) -> list[Record]:
        """Every deployment local state knows, by name."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT spec, keys, deployed, created_at, updated_at FROM deployments ORDER BY name"
            ).fetchall()
        return [_record(row) for row in rows]

    def save(
        self, spec: DeploymentSpec, keys: list[KeyRecord], *, deployed: bool, action: str
    ) -> int:
        """Store the deployment as it now is and add a revision; return the revision number."""
        now = time.time()
        spec_json = spec.model_dump_json()
        keys_json = json.dumps([k.model_dump() for k in keys])
        with self._connect() as db:
            db.execute(
                "INSERT INTO deployments (name, spec, keys, deployed, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec=excluded.spec,"
                " keys=excluded.keys, deployed=excluded.deployed, updated_at=excluded.updated_at",
                (spec.name, spec_json, keys_json, int(deployed), now, now),
            )
            (last,) = db.execute(
                "SELECT COALESCE(MAX(revision), 0) FROM revisions WHERE name=?", (spec.name,)
            ).fetchone()
            revision = int(last) + 1
            db.execute(
                "INSERT INTO revisions (name, revision, spec, action, created_at) VALUES (?,?,?,?,?)",
                (spec.name, revision, spec_json, action, now),
            )
        return revision

    def set_keys(self, name: str, keys: list[KeyRecord]) -> None:
        """Replace the key records of a deployment (no new revision: keys are not config)."""
        with self._connect() as db:
            db.execute(
                "UPDATE deployments SET keys=?, updated_at=? WHERE name=?",
                (json.dumps([k.model_dump() for k in keys]), time.time(), name),
            )

    def mark_seen(self, name: str, session: str) -> None:
        """Note that the deployment ran on the cluster of this Ray session just now."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO seen (name, session, seen_at) VALUES (?, ?, ?) ON CONFLICT(name)"
                " DO UPDATE SET session=excluded.session, seen_at=excluded.seen_at",
                (name, session, time.time()),
            )

    def seen_in(self, name: str) -> str | None:
        """The Ray session this machine last saw the deployment running in, or None."""
        with self._connect() as db:
            row = db.execute("SELECT session FROM seen WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else None

    def forget_seen(self, name: str) -> None:
        """Forget where the deployment was last seen (it is being removed by this machine)."""
        with self._connect() as db:
            db.execute("DELETE FROM seen WHERE name=?", (name,))

    def revisions(self, name: str) -> list[Revision]:
        """A deployment's history, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT revision, spec, action, created_at FROM revisions WHERE name=? ORDER BY revision",
                (name,),
            ).fetchall()
        return [Revision(r, DeploymentSpec.model_validate_json(s), a, t) for r, s, a, t in rows]

    def delete(self, name: str) -> None:
        """Forget a deployment and its history."""
        with self._connect() as db:
            db.execute("DELETE FROM deployments WHERE name=?", (name,))
            db.execute("DELETE FROM revisions WHERE name=?", (name,))


def _private(path: Path) -> None:
    """Create the file readable by its owner only (whatever the folder or umask), or make it so."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


def _record(row: tuple) -> Record:
    spec_json, keys_json, deployed, created_at, updated_at = row
    return Record(
        spec=DeploymentSpec.model_validate_json(spec_json),
        keys=[KeyRecord.model_validate(k) for k in json.loads(keys_json)],
        deployed=bool(deployed),
        created_at=created_at,
        updated_at=updated_at,
    )
