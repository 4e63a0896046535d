"""Security: key entropy, only hashes stored, keys scoped to one deployment, revocation
within 5 s, and no key or Ray token in any log or output after a lifecycle run.

The lifecycle runs the real CLI (subprocesses, as a person would) in a GALE_HOME of
its own against the session's cluster. The short form works on the session's bundled
deployment; the full form also deploys, changes, undeploys and deletes one of its own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import eventually
from serving.keys import SHOWN_PREFIX_LENGTH, generate_key, hash_key
from tests.conftest import Deployed
from tests.reliability.conftest import FULL

GALE = str(Path(sys.executable).parent / "gale")
RAY_LOGS = Path("/tmp/ray/session_latest/logs")


def test_keys_carry_at_least_128_bits_of_entropy() -> None:
    keys = [generate_key()[0] for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    secrets_only = [key.removeprefix("gale-") for key in keys]
    assert all(key.startswith("gale-") for key in keys)
    for secret in secrets_only:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) * 8 >= 128
    # What `gale keys list` shows (the prefix) leaves at least 128 bits unseen.
    hidden = len(secrets_only[0]) - (SHOWN_PREFIX_LENGTH - len("gale-"))
    assert hidden * 6 >= 128
    # Every position of the secret varies across keys (a constant or biased generator fails).
    for position in range(len(secrets_only[0]) - 1):  # the last char carries padding bits
        assert len({s[position] for s in secrets_only}) >= 56, position


class Cli:
    """The gale CLI as subprocesses in a GALE_HOME of its own, every output kept."""

    def __init__(self, home: Path, token: str) -> None:
        self.env = {**os.environ, "GALE_HOME": str(home), "RAY_AUTH_TOKEN": token}
        self.env.pop("GALE_API_KEY", None)
        self.outputs: list[tuple[list[str], str]] = []

    def __call__(self, *argv: str, env: dict[str, str] | None = None, ok: bool = True) -> str:
        done = subprocess.run(
            [GALE, *argv],
            capture_output=True,
            text=True,
            timeout=900,
            env={**self.env, **(env or {})},
            check=False,
        )
        self.outputs.append((list(argv), done.stdout + done.stderr))
        if ok:
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture
def cli(tmp_path: Path, bundled_model: Deployed) -> Iterator[Cli]:
    home = tmp_path / "gale-home"
    home.mkdir()
    yield Cli(home, bundled_model.client.config.token or "")


def _status(base_url: str, key: str) -> int:
    response = httpx.get(
        base_url + "/models",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    return response.status_code


def _files_containing(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {needle[:12]}…" for needle in needles if needle.encode() in data]
    return found


@pytest.mark.cluster
@pytest.mark.model
def test_lifecycle_stores_only_hashes_revokes_fast_and_leaks_nothing(
    cli: Cli, bundled_model: Deployed, tmp_path: Path
) -> None:
    client = bundled_model.client
    token = client.config.token
    assert token
    name = bundled_model.name
    cli("list")
    cli("describe", name)
    created = json.loads(cli("keys", "create", name, "--key-name", "security", "--json"))
    key, key_id = created["key"], created["id"]
    eventually(
        lambda: _status(bundled_model.base_url, key) == 200, 10, "the new key opens the endpoint"
    )
    cli("keys", "list", name)
    cli("chat", name, "Say hello.", env={"GALE_API_KEY": key})
    cli("status", name)
    cli("endpoint", name)
    cli("export", name)

    # Only hashes: the cluster's config and every local state file.
    config = json.dumps(client.get_application(name))
    assert hash_key(key) in config and key not in config
    home = Path(cli.env["GALE_HOME"])
    assert not _files_containing(home, [key, token])
    # Local state does hold the key's record (so `gale keys list` works): as a hash.
    assert _files_containing(home, [hash_key(key)])

    started = time.monotonic()
    cli("keys", "revoke", name, key_id)
    eventually(
        lambda: _status(bundled_model.base_url, key) == 401,
        5 - (time.monotonic() - started),
        "revoked",
    )
    print(
        f"\nrevoked key refused {time.monotonic() - started:.2f}s after `gale keys revoke` started"
    )
    assert _status(bundled_model.base_url, bundled_model.key) == 200

    if FULL:
        _full_lifecycle(cli, bundled_model)

    # Nothing printed the key except the one `keys create` that hands it out, and nothing
    # printed the token; no Ray log holds either.
    shown = [argv for argv, text in cli.outputs if key in text]
    assert shown == [["keys", "create", name, "--key-name", "security", "--json"]]
    assert not [argv for argv, text in cli.outputs if token in text]
    assert RAY_LOGS.is_dir()
    assert not _files_containing(RAY_LOGS.resolve(), [key, token, bundled_model.key])


def _full_lifecycle(cli: Cli, bundled_model: Deployed) -> None:
    """Deploy a second deployment through the CLI, check keys stay apart, change it, remove it."""
    other = "security-other"
    answer = json.loads(
        cli(
            "deploy",
            "--no-input",
            "--accept-terms",
            "--json",
            "--model",
            "smollm2-135m-instruct",
            "--name",
            other,
            "--hardware",
            "cpu",
            "--temperature",
            "0",
            "--max-length",
            "16",
        )
    )
    other_key = answer["api_key"]
    other_url = bundled_model.client.config.serve_url + f"/{other}/v1"
    try:
        assert _status(other_url, other_key) == 200
        assert _status(other_url, bundled_model.key) == 401
        assert _status(bundled_model.base_url, other_key) == 401
        cli("redeploy", other, "--temperature", "0.5", "--yes", "--no-input")
        cli("undeploy", other)
        cli("list")
        cli("redeploy", other, "--yes", "--no-input")
        assert _status(other_url, other_key) == 200
    finally:
        cli("delete", other, "--yes", ok=False)
    bundled_model.client.wait_for_removal(other, 120)
    cli.outputs = [
        (argv, text.replace(other_key, "<the other key, shown once>"))
        if argv[0] == "deploy"
        else (argv, text)
        for argv, text in cli.outputs
    ]
    assert not [argv for argv, text in cli.outputs if other_key in text]
