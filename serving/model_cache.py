"""GGUF weights as a dequantized safetensors folder, converted once and kept in a cache.

vLLM reads Hugging Face folders (config.json, *.safetensors, tokenizer files), not
the bundled model's GGUF file. transformers can dequantize a GGUF file; the result
is saved under `$GALE_MODEL_CACHE` (default `~/.cache/gale/models`) in a folder
named after the file and a hash of its contents, and reused from then on.

Several replicas on one machine may start at once: the first to take the folder's
lock converts, into a temporary folder beside the final one that is renamed into
place when complete; the others wait on the lock and then find the folder. A
folder that exists is therefore always whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.engines.errors import ModelLoadError
from serving.file_lock import locked
from serving.model_source import ModelSource

logger = logging.getLogger("ray.serve")

CACHE_ENV = "GALE_MODEL_CACHE"
_HASH_CHUNK = 1 << 20


def cache_root() -> Path:
    """Where converted models live: `$GALE_MODEL_CACHE`, else `~/.cache/gale/models`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "gale" / "models"


def hf_folder(
    source: ModelSource,
    root: Path | None = None,
    convert: Callable[[ModelSource, Path], None] | None = None,
) -> str:
    """A Hugging Face folder (or hub repo id) holding `source` as safetensors.

    Safetensors sources are returned as they are; a GGUF source is converted on
    first use (`convert`, by default `convert_gguf`: about 20 s for the bundled
    model) and found in the cache afterwards.
    """
    if source.format == "safetensors":
        return source.location
    assert source.gguf_file is not None
    gguf = Path(source.location) / source.gguf_file
    root = root or cache_root()
    final = root / cache_key(gguf)
    if final.is_dir():
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / f"{final.name}.lock"):
        if final.is_dir():  # another replica converted it while we waited
            return str(final)
        building = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
        building.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        try:
            logger.info("gale: converting %s to safetensors in %s", gguf, final)
            (convert or convert_gguf)(source, building)
            os.rename(building, final)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return str(final)


def cache_key(gguf: Path) -> str:
    """The cache folder's name: the file's stem and a hash of its contents."""
    digest = hashlib.sha256()
    with gguf.open("rb") as handle:
        while block := handle.read(_HASH_CHUNK):
            digest.update(block)
    return f"{gguf.stem}-{digest.hexdigest()[:16]}"


def convert_gguf(source: ModelSource, target: Path) -> None:
    """Dequantize a GGUF model and save it with its tokenizer as a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    kwargs = source.pretrained_kwargs()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source.location,
            quantization_config=GgufConfig(dequantize=True),
            **kwargs,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not convert {source.ref} to safetensors: {error}") from error
    # The weights are plain tensors now; a quantizer left on the model makes
    # save_pretrained refuse ("not serializable") and would tell readers otherwise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
