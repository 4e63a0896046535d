"""`make demo`'s program on the session's cluster: deploys the bundled model and gets Paris."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gale_cli.cluster import ServeClient
from gale_cli.demo import NAME

pytestmark = pytest.mark.cluster


def test_demo_deploys_and_answers_then_reuses_the_deployment(ray_cluster: ServeClient) -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-m", "gale_cli.demo"],
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        for done in runs:
            assert done.returncode == 0, done.stderr
            assert "A: " in done.stderr and "Paris" in done.stderr
            assert f"/{NAME}/v1" in done.stderr
        assert "Deploying the bundled model" in runs[0].stderr
        assert "exists (Deployed)" in runs[1].stderr
    finally:
        ray_cluster.remove_application(NAME)
        ray_cluster.wait_for_removal(NAME, timeout=120)
