"""The engine factory: which engine a replica runs, and loading it.

Beside the interface (`serving.engines.base`), not inside it, so the interface
imports no engine and each engine imports only the interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from serving.engines.errors import ModelLoadError

if TYPE_CHECKING:
    from serving.catalog import HardwareProfile
    from serving.engines.base import Engine
    from serving.hub import Progress


def load_engine(
    model_ref_text: str,
    hardware_profile: HardwareProfile | str | None = None,
    trust_remote_code: bool = False,
    batch_size: int | None = None,
    engine: str = "auto",
    kv_cache_gb: float | None = None,
    *,
    model_commit: str | None = None,
    progress: Progress | None = None,
) -> Engine:
    """Load the model a spec names onto what this replica has (blocking; may take minutes).

    `engine` is the spec's field: "vllm" and "transformers" are honoured as asked
    (vLLM without a CUDA device runs its CPU build); "auto" is vLLM when this
    replica sees a CUDA device and vllm is installed, else transformers, which
    starts in seconds where vLLM's CPU build takes about a minute and a half.
    `batch_size` is what vLLM sizes its batch by at start (`max_num_seqs`); the
    transformers engine takes it in place, so a replica leaves it None there and
    sets it from its user_config. `kv_cache_gb` overrides the vLLM CPU KV cache
    size the profile implies. A Hugging Face model is fetched at `model_commit` (the
    deployment's pin), reporting `progress(bytes done, bytes total)`.
    """
    from serving import catalog
    from serving.model_source import resolve

    profile = (
        catalog.hardware()[hardware_profile]
        if isinstance(hardware_profile, str)
        else hardware_profile
    )
    source = resolve(
        model_ref_text, trust_remote_code=trust_remote_code, commit=model_commit, progress=progress
    )
    chosen = choose_engine(engine)
    if chosen == "vllm":
        from serving.engines.vllm_engine import VLLMEngine
        from serving.spec import DeploymentSpec

        if batch_size is None:
            # `auto` chose vLLM where the spec expected transformers (a GPU it did not
            # ask for), so the args carry no max_num_seqs: start at the spec's default.
            batch_size = DeploymentSpec.model_fields["batch_size"].default
        return VLLMEngine.load(
            source, profile=profile, max_num_seqs=batch_size, kv_cache_gb=kv_cache_gb
        )
    from serving.engines.transformers_engine import TransformersEngine

    loaded = TransformersEngine.load(source, profile=profile)
    if batch_size is not None:
        loaded.set_batch_size(batch_size)
    return loaded


def choose_engine(engine: str, gpu_ready: bool | None = None) -> Literal["transformers", "vllm"]:
    """The engine a replica runs for the spec's `engine` field; auto is decided here.

    `gpu_ready`: whether this replica has a CUDA device and vllm imports (found
    out when None).
    """
    if engine in ("transformers", "vllm"):
        return engine  # type: ignore[return-value]
    if engine != "auto":
        raise ModelLoadError(f"unknown engine '{engine}'; use auto, transformers or vllm")
    if gpu_ready is None:
        gpu_ready = _has_cuda() and _vllm_importable()
    return "vllm" if gpu_ready else "transformers"


def _has_cuda() -> bool:
    # A replica placed on logical GPUs of a CPU machine has CUDA_VISIBLE_DEVICES
    # set but no device: torch is the judge.
    import torch

    return bool(torch.cuda.is_available())


def _vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a build that does not match this machine
        return False
    return True
