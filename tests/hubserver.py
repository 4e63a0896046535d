"""A local server that speaks the part of the Hugging Face Hub's protocol huggingface_hub uses.

Enough for `model_info`/`repo_info`, `list_repo_tree`, `hf_hub_download` and
`snapshot_download` (read from huggingface_hub's own client: `hf_api.py`,
`file_download.py`, `utils/_http.py`): revision resolution to a commit, file
listings with sizes, downloads with ETag / X-Repo-Commit / Content-Length and
byte ranges, the error codes the client turns into its typed errors
(`X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound | GatedRepo`),
and gated repos that want a token. Tests point `HF_ENDPOINT` (or `endpoint=`)
at it; nothing reaches the real Hub.

Written by hand because no maintained package serves the Hub's protocol locally.
It counts the requests it answers and can drop a connection part-way through a
file, so tests can assert "downloaded once" and "resumed after a cut".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 16


@dataclass
class HubFile:
    """One file of a commit: its bytes on disk or in memory."""

    data: bytes | Path

    def size(self) -> int:
        """Its length in bytes."""
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in chunks."""
        if isinstance(self.data, bytes):
            for offset in range(start, end, CHUNK):
                yield self.data[offset : min(end, offset + CHUNK)]
            return
        with self.data.open("rb") as handle:
            handle.seek(start)
            left = end - start
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    return
                left -= len(block)
                yield block

    @cached_property
    def etag(self) -> str:
        """The content's sha256, as the Hub gives for LFS files."""
        digest = hashlib.sha256()
        for block in self.read(0, self.size()):
            digest.update(block)
        return digest.hexdigest()


@dataclass
class HubRepo:
    """A model repo: commits (hash → files) and refs (branch or tag → commit)."""

    commits: dict[str, dict[str, HubFile]]
    refs: dict[str, str]
    gated_token: str | None = None
    """When set, the repo is gated: only this token opens it."""

    def commit_of(self, revision: str) -> str | None:
        """The commit a branch, tag or commit hash names, or None."""
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


def commit_hash(label: str) -> str:
    """A 40-hex commit hash derived from a label, stable across runs."""
    return hashlib.sha1(label.encode()).hexdigest()


@dataclass
class Logged:
    """One answered request."""

    method: str
    path: str
    status: int


@dataclass
class HubServer:
    """The repos served, what was asked of them, and the faults to inject."""

    repos: dict[str, HubRepo]
    requests: list[Logged] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)
    """filename → bytes after which the next full GET of it is cut off (once)."""
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def downloads(self, filename: str) -> list[Logged]:
        """The GET requests that fetched `filename`'s bytes."""
        return [
            r
            for r in self.requests
            if r.method == "GET" and "/resolve/" in r.path and r.path.endswith("/" + filename)
        ]

    def log(self, method: str, path: str, status: int) -> None:
        """Record one answered request."""
        with self._lock:
            self.requests.append(Logged(method, path, status))

    def take_cut(self, filename: str) -> int | None:
        """The byte count to cut `filename` at, once."""
        with self._lock:
            return self.cut_after.pop(filename, None)


_MODEL_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the server keeps its own log of requests."""

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if match := _TREE_API.match(path):
            status = self._tree(match["repo"], match["rev"], match["path"] or "")
        elif match := _MODEL_API.match(path):
            status = self._info(match["repo"], match["rev"] or "main")
        elif match := _RESOLVE.match(path):
            status = self._file(match["repo"], match["rev"], match["file"], head)
        else:
            status = self._error(404, "RepoNotFound", "no such route")
        self.hub.log(self.command, path, status)

    def _open(self, repo_id: str, revision: str) -> tuple[HubRepo, str] | int:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if repo.gated_token is not None:
            sent = self.headers.get("Authorization", "")
            if sent != f"Bearer {repo.gated_token}":
                message = f"Access to model {repo_id} is restricted. You must have access to it."
                return self._error(401 if not sent else 403, "GatedRepo", message)
        commit = repo.commit_of(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, commit

    def _info(self, repo_id: str, revision: str) -> int:
        opened = self._open(repo_id, revision)
        if isinstance(opened, int):
            return opened
        repo, commit = opened
        body = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": False,
            "gated": "manual" if repo.gated_token else False,
            "disabled": False,
            "siblings": [{"rfilename": name} for name in sorted(repo.commits[commit])],
        }
        return self._json(body)

    def _tree(self, repo_id: str, revision: str, folder: str) -> int:
        opened = self._open(repo_id, revision)
        if isinstance(opened, int):
            return opened
        repo, commit = opened
        prefix = folder.rstrip("/") + "/" if folder else ""
        rows = [
            {
                "type": "file",
                "oid": hashlib.sha1(name.encode() + commit.encode()).hexdigest(),
                "size": item.size(),
                "path": name,
            }
            for name, item in sorted(repo.commits[commit].items())
            if name.startswith(prefix)
        ]
        return self._json(rows)

    def _file(self, repo_id: str, revision: str, filename: str, head: bool) -> int:
        opened = self._open(repo_id, revision)
        if isinstance(opened, int):
            return opened
        repo, commit = opened
        item = repo.commits[commit].get(filename)
        if item is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}")
        size = item.size()
        start, end, status = 0, size, 200
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if wanted and not head:
            start = int(wanted["start"])
            end = int(wanted["end"]) + 1 if wanted["end"] else size
            status = 206
        self.send_response(status)
        self.send_header("ETag", f'"{item.etag}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return status
        cut = self.hub.take_cut(filename) if start == 0 else None
        sent = 0
        for block in item.read(start, end):
            if cut is not None and sent + len(block) > cut:
                self.wfile.write(block[: cut - sent])
                self.wfile.flush()
                # Close without finishing the body: the client sees a connection cut mid-file.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return status
            self.wfile.write(block)
            sent += len(block)
        return status

    def _json(self, body: object) -> int:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return 200

    def _error(self, status: int, code: str, message: str) -> int:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status


@contextlib.contextmanager
def serve_hub(
    repos: dict[str, HubRepo], host: str = "127.0.0.1", port: int = 0
) -> Iterator[HubServer]:
    """Serve `repos` (on a free port unless given one) for the duration of the block."""
    hub = HubServer(repos)
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    hub.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="hubserver", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


# The repos tests use: the bundled model's GGUF at two revisions, and a gated copy.
MODEL_REPO = "gale-tests/smollm2"
GATED_REPO = "gale-tests/smollm2-gated"
GATED_TOKEN = "hf_galetestsgatedtoken0123456789"
V1, V2 = commit_hash("smollm2 v1"), commit_hash("smollm2 v2")


def sample_repos(weights: Path) -> dict[str, HubRepo]:
    """`MODEL_REPO` (main → v2, tag v1.0 → v1) and `GATED_REPO`, holding the GGUF `weights`."""
    gguf = HubFile(weights)

    def files(note: str) -> dict[str, HubFile]:
        return {weights.name: gguf, "README.md": HubFile(f"# smollm2 {note}\n".encode())}

    return {
        MODEL_REPO: HubRepo({V1: files("v1"), V2: files("v2")}, {"main": V2, "v1.0": V1}),
        GATED_REPO: HubRepo({V1: files("gated")}, {"main": V1}, gated_token=GATED_TOKEN),
    }
