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

EngineName = Literal["transformers", "vllm", "llamacpp"]
ENGINES: tuple[EngineName, ...] = ("transformers", "vllm", "llamacpp")


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

    `engine` is the spec's field: "vllm", "transformers" and "llamacpp" are
    honoured as asked (vLLM without a CUDA device runs its CPU build); "auto" is
    decided by `choose_engine` (docs/engines.md has the figures behind it).
    `batch_size` is what vLLM and llama.cpp size their batch by at start
    (`max_num_seqs`, slots); the transformers engine takes it in place, so a
    replica leaves it None there and sets it from its user_config. `kv_cache_gb`
    overrides the CPU KV cache size the profile implies (vLLM, llama.cpp). A Hugging
    Face model is fetched at `model_commit` (the deployment's pin), reporting
    `progress(bytes done, bytes total)`.
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
    chosen = choose_engine(engine, gguf=source.format == "gguf")
    if chosen in ("vllm", "llamacpp") and batch_size is None:
        from serving.spec import DeploymentSpec

        # `auto` chose an engine that sizes its batch at start where the spec expected
        # transformers (a GPU it did not ask for), so the args carry no max_num_seqs:
        # start at the spec's default.
        batch_size = DeploymentSpec.model_fields["batch_size"].default
    if chosen == "llamacpp":
        from serving.engines.llamacpp_engine import LlamaCppEngine

        assert batch_size is not None
        return LlamaCppEngine.load(
            source, profile=profile, parallel=batch_size, kv_cache_gb=kv_cache_gb
        )
    if chosen == "vllm":
        from serving.engines.vllm_engine import VLLMEngine

        assert batch_size is not None
        return VLLMEngine.load(
            source, profile=profile, max_num_seqs=batch_size, kv_cache_gb=kv_cache_gb
        )
    from serving.engines.transformers_engine import TransformersEngine

    loaded = TransformersEngine.load(source, profile=profile)
    if batch_size is not None:
        loaded.set_batch_size(batch_size)
    return loaded


def choose_engine(
    engine: str,
    gpu_ready: bool | None = None,
    *,
    gguf: bool = False,
    llamacpp_ready: bool | None = None,
) -> EngineName:
    """The engine a replica runs for the spec's `engine` field; auto is decided here.

    `auto`: vLLM where the replica has a CUDA device and vllm imports (`gpu_ready`);
    on CPU, llama.cpp for a GGUF source when llama-server is installed
    (`llamacpp_ready`), else transformers. Both are found out when None.
    """
    if engine in ENGINES:
        return engine  # type: ignore[return-value]
    if engine != "auto":
        raise ModelLoadError(f"unknown engine '{engine}'; use auto, transformers, vllm or llamacpp")
    if gpu_ready is None:
        gpu_ready = _has_cuda() and _vllm_importable()
    if gpu_ready:
        return "vllm"
    if gguf:
        if llamacpp_ready is None:
            from serving.engines.llamacpp_server import server_binary

            llamacpp_ready = server_binary() is not None
        if llamacpp_ready:
            return "llamacpp"
    return "transformers"


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
