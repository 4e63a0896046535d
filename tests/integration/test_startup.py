"""Start-up phases on a real local head: a start that fails says in which phase and why."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gale_cli.cluster import ServeClient
from tests.conftest import gale

pytestmark = pytest.mark.cluster

FLAGS = ["--no-input", "--accept-terms", "--hardware", "cpu", "--temperature", "0"]


def test_a_model_that_fails_to_load_names_the_phase_and_the_replicas_error(
    ray_cluster: ServeClient, delete_after: Callable[..., str], tmp_path: Path
) -> None:
    # Pickled weights only: the replica refuses them while loading, before any engine starts.
    folder = tmp_path / "pickled-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 64)
    name = delete_after("pickled")
    result = gale("deploy", *FLAGS, "--name", name, "--model", str(folder), "--timeout", "300")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"'{name}' failed while loading: ModelLoadError" in result.stderr
    assert "only pickled weights" in result.stderr
    # The replica's own last lines follow, its error among them.
    assert "Last lines of replica" in result.stderr
    tail = result.stderr.split("Last lines of replica", 1)[1]
    assert "ModelLoadError: " in tail and "only pickled weights" in tail

    # `gale status` says the same from another process, which never saw the replica start.
    shown = gale("status", name, "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["status"] == "Failed", status
    assert status["failure"]["phase"] == "loading"
    assert "only pickled weights" in status["failure"]["error"]
    assert any("only pickled weights" in line for line in status["failure"]["log"])
