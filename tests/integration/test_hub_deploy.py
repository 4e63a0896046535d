"""A Hugging Face model deployed for real: pinned at deploy, downloaded once per node, no token leaks.

The local test Hub (tests/hubserver.py) serves the bundled model's GGUF as
`gale-tests/smollm2`, whose `main` has moved on since tag `v1.0`. The session's
head and replicas reach it through HF_ENDPOINT (tests/conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gale_cli.cluster import ServeClient
from tests.conftest import gale
from tests.hubserver import MODEL_REPO, V1, HubServer

pytestmark = [pytest.mark.cluster, pytest.mark.model]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub-model.yaml"
WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A token in the deploying environment: it must reach no config, export or output.
SENTINEL = "hf_galetestsentinel0123456789abcdef"


def test_a_tag_is_pinned_and_two_replicas_starting_together_download_once(
    ray_cluster: ServeClient, hub_server: HubServer, delete_after: Callable[[str], str]
) -> None:
    name = delete_after("hub-model")
    # The example spec, pointed at the local test Hub's copy of the bundled model.
    deployed = gale(
        "deploy",
        "-f",
        str(EXAMPLE),
        "--no-input",
        "--accept-terms",
        "--json",
        "--name",
        name,
        "--model",
        f"hf:{MODEL_REPO}@v1.0",
        "--temperature",
        "0",
        "--min-replicas",
        "2",
        "--max-replicas",
        "2",
        env={"HF_TOKEN": SENTINEL},
    )
    assert deployed.returncode == 0, deployed.stderr
    result = json.loads(deployed.stdout)
    assert result["status"] == "Deployed"
    assert f"is commit {V1}" in deployed.stderr
    assert SENTINEL not in deployed.stdout + deployed.stderr

    # Two replicas started together on one node: the weights crossed the network once.
    assert len(hub_server.downloads(WEIGHTS)) == 1
    app = ray_cluster.get_application(name)
    assert app is not None
    replicas = app["deployments"]["GaleModel"]["replicas"]
    assert [r["state"] for r in replicas] == ["RUNNING", "RUNNING"]

    reply = httpx.post(
        f"{result['endpoint']}/chat/completions",
        json={
            "model": name,
            "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
            "max_tokens": 8,
        },
        headers={"Authorization": f"Bearer {result['api_key']}"},
        timeout=120,
        trust_env=False,
    )
    assert reply.status_code == 200, reply.text
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]

    # The pin: the live config, describe and an export all carry the commit, never the token.
    live_config = json.dumps(app["deployed_app_config"])
    assert app["deployed_app_config"]["args"]["model_commit"] == V1
    described = gale("describe", name, "--json")
    assert described.returncode == 0, described.stderr
    spec = json.loads(described.stdout)["spec"]
    assert (spec["model"], spec["model_commit"]) == (f"hf:{MODEL_REPO}@v1.0", V1)
    assert V1 in gale("describe", name).stderr + gale("describe", name).stdout
    exported = gale("export", name, env={"HF_TOKEN": SENTINEL})
    manifest = gale("export", name, "--format", "rayservice", env={"HF_TOKEN": SENTINEL})
    assert exported.returncode == 0 and manifest.returncode == 0, exported.stderr
    assert V1 in exported.stdout
    for text in (live_config, exported.stdout, manifest.stdout, json.dumps(ray_cluster_env(app))):
        assert SENTINEL not in text

    # A redeploy that leaves the model alone keeps the pin, though `main` moved: no Hub call.
    asked = len(hub_server.requests)
    again = gale("redeploy", name, "--temperature", "0.1", "--yes", "--json")
    assert again.returncode == 0, again.stderr
    app = ray_cluster.get_application(name)
    assert app is not None and app["deployed_app_config"]["args"]["model_commit"] == V1
    assert len(hub_server.requests) == asked


def ray_cluster_env(app: dict[str, object]) -> object:
    """What the dashboard shows of the application's runtime environment."""
    config = app.get("deployed_app_config")
    return config.get("runtime_env", {}) if isinstance(config, dict) else {}
