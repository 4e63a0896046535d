"""Resolving model references to loadable files (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.engines.errors import ModelLoadError
from serving.model_source import resolve


def test_bundled_catalog_model_resolves_to_its_gguf() -> None:
    source = resolve("smollm2-135m-instruct")
    assert source.format == "gguf"
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (Path(source.location) / source.gguf_file).is_file()
    assert source.context_length == 8192
    assert source.pretrained_kwargs() == {
        "local_files_only": True,
        "trust_remote_code": False,
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }


def test_gguf_file_path(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    source = resolve(str(weights), trust_remote_code=True)
    assert (source.format, source.location, source.gguf_file) == (
        "gguf",
        str(tmp_path),
        "model.gguf",
    )
    assert source.trust_remote_code is True


def test_safetensors_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    source = resolve(str(tmp_path))
    assert (source.format, source.location, source.gguf_file) == (
        "safetensors",
        str(tmp_path),
        None,
    )
    assert source.local_files_only


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["config.json", "pytorch_model.bin"], "pickled"),
        (["config.json", "model.pt"], "pickled"),
        (["config.json"], "holds no"),
        (["a.gguf", "b.gguf"], "several .gguf"),
    ],
)
def test_folders_refused(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelLoadError, match=message):
        resolve(str(tmp_path))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("/no/such/model", "does not exist"),
        ("./relative", "relative path"),
        ("not-a-model", "unknown model"),
    ],
)
def test_bad_references(ref: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        resolve(ref)


def test_non_gguf_file_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        resolve(str(weights))


def test_uncached_hub_repo_says_what_to_do() -> None:
    # The session's HF_ENDPOINT is the local test Hub: unreachable until a test starts it
    # (then: pass a local path), after that a Hub without this repo (then: check the name).
    # tests/serving/test_hub.py covers each case on its own.
    with pytest.raises(ModelLoadError, match="absolute local path|no such model repo"):
        resolve("hf:gale-tests-nobody/no-such-model@main")
