"""Connection settings: where the Ray dashboard and Serve endpoint are, and the token."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gale_cli.errors import UsageError

DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8265"
DEFAULT_SERVE_URL = "http://127.0.0.1:8000"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
INSECURE_ENV = "GALE_INSECURE"


def _normalize_url(text: str) -> str:
    text = text.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster is and how to authenticate; the token never appears in repr."""

    dashboard_url: str = DEFAULT_DASHBOARD_URL
    serve_url: str = DEFAULT_SERVE_URL
    gale_home: Path = field(default_factory=lambda: Path.home() / ".gale")
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    """Where the token came from (an env var name or a file path), for messages."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterConfig:
        """Settings from GALE_RAY_ADDRESS, GALE_SERVE_URL, GALE_HOME and RAY_AUTH_TOKEN[_PATH]."""
        env = os.environ if environ is None else environ
        home = Path(env.get("GALE_HOME") or Path.home() / ".gale").expanduser()
        config = cls(
            dashboard_url=_normalize_url(env.get("GALE_RAY_ADDRESS") or DEFAULT_DASHBOARD_URL),
            serve_url=_normalize_url(env.get("GALE_SERVE_URL") or DEFAULT_SERVE_URL),
            gale_home=home,
        )
        if config.plain_http_remote and env.get(INSECURE_ENV) != "1":
            # Over plain HTTP the Ray token (which lets its holder run code) crosses the
            # network in clear: only when the person says so.
            raise UsageError(
                f"GALE_RAY_ADDRESS {config.dashboard_url} is plain http:// on another machine: "
                "the Ray token would cross the network in clear",
                hint="use https:// (a TLS proxy in front of the dashboard), an SSH tunnel to "
                f"127.0.0.1, or set {INSECURE_ENV}=1 to send it anyway",
            )
        token, source = _find_token(env, config)
        return config.with_token(token, source)

    def with_token(self, token: str | None, source: str | None) -> ClusterConfig:
        """A copy carrying another token."""
        return ClusterConfig(self.dashboard_url, self.serve_url, self.gale_home, token, source)

    @property
    def is_local(self) -> bool:
        """Whether the dashboard is on this machine's loopback (the embedded default)."""
        return (urlsplit(self.dashboard_url).hostname or "") in LOOPBACK

    @property
    def plain_http_remote(self) -> bool:
        """Whether the dashboard is reached over plain http:// on another machine."""
        return urlsplit(self.dashboard_url).scheme == "http" and not self.is_local

    @property
    def token_file(self) -> Path:
        """Where gale keeps the token of the local head it starts."""
        return self.gale_home / "ray-token"

    def serve_http_options(self) -> dict[str, Any]:
        """Serve's HTTP proxy bind address, taken from the public endpoint base."""
        parts = urlsplit(self.serve_url)
        return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 8000}


def _read_token(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or None
    return None


def _find_token(env: Mapping[str, str], config: ClusterConfig) -> tuple[str | None, str | None]:
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        return _read_token(path), str(path)
    # gale's own token only ever goes to the local head it belongs to.
    candidates = [config.token_file] if config.is_local else []
    candidates.append(Path.home() / ".ray" / "auth_token")  # Ray's own default
    for path in candidates:
        token = _read_token(path)
        if token:
            return token, str(path)
    return None, None
