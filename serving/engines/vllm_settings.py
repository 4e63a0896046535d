"""How vLLM is started on a replica: settings from the hardware profile and the machine."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from serving.catalog import GIB, HardwareProfile

# Host memory a CPU replica keeps for torch, vLLM's two processes and the API
# besides the weights and the KV cache.
CPU_RUNTIME_GB = 2.0
MIN_KV_CACHE_GB = 1.0
# vLLM's own default; a profile that asks for less of a bigger GPU gets less.
MAX_GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class VLLMSettings:
    """What the engine is started with, derived from the profile and this replica."""

    max_num_seqs: int
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    kv_cache_gb: float | None = None
    """CPU only: KV cache space; None on GPU (vLLM sizes it from gpu_memory_utilization)."""
    threads_bind: str | None = None
    """CPU only: VLLM_CPU_OMP_THREADS_BIND ('auto' binds the allowed cores, one kept back)."""
    threads: int | None = None
    """CPU only: OpenMP threads, when not bound ('nobind')."""


def cpu_settings(
    profile: HardwareProfile | None,
    weights_gb: float,
    max_num_seqs: int,
    kv_cache_gb: float | None = None,
) -> VLLMSettings:
    """Settings on a replica without a CUDA device: the CPU build, tensor parallel 1."""
    if kv_cache_gb is None:
        memory = profile.memory_gb if profile is not None else 4.0
        kv_cache_gb = max(MIN_KV_CACHE_GB, memory - weights_gb - CPU_RUNTIME_GB)
        kv_cache_gb = min(kv_cache_gb, max(MIN_KV_CACHE_GB, host_available_gb() / 2))
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    allowed = allowed or 1
    # Ray sets OMP_NUM_THREADS to the replica's num_cpus.
    wanted = int(os.environ.get("OMP_NUM_THREADS") or allowed)
    if wanted >= allowed:
        # The whole machine: let vLLM bind its threads (it keeps a core for its scheduler).
        bind, threads = "auto", None
    else:
        # A share of a node: no pinning, so replicas side by side don't pin the same cores.
        bind, threads = "nobind", max(1, wanted)
    return VLLMSettings(
        max_num_seqs=max_num_seqs,
        kv_cache_gb=round(kv_cache_gb, 2),
        threads_bind=bind,
        threads=threads,
    )


def gpu_settings(
    profile: HardwareProfile | None, visible_gpus: int, gpu_total_gb: float, max_num_seqs: int
) -> VLLMSettings:
    """Settings on a CUDA replica: tensor parallel over its GPUs, memory as the profile has."""
    wanted = profile.gpus if profile is not None and profile.is_gpu else 1
    tensor_parallel = max(1, min(wanted, visible_gpus))
    utilization = MAX_GPU_MEMORY_UTILIZATION
    if profile is not None and profile.gpu_memory_gb and gpu_total_gb > 0:
        utilization = min(utilization, profile.gpu_memory_gb / gpu_total_gb)
    return VLLMSettings(
        max_num_seqs=max_num_seqs,
        tensor_parallel_size=tensor_parallel,
        gpu_memory_utilization=round(utilization, 3),
    )


class cpu_thread_env:
    """Set vLLM's CPU thread variables for the engine core's start, then restore them.

    With `auto` binding vLLM sizes its threads from the cores it binds, as `vllm serve`
    does, but only if OMP_NUM_THREADS is unset: the one Ray puts in a replica's
    environment (its num_cpus) would otherwise leave torch with that many threads on
    the engine's one bound core, spin-waiting on each other. So it is removed for the start.
    """

    def __init__(self, settings: VLLMSettings) -> None:
        self._set: dict[str, str | None] = {}
        if settings.threads_bind is not None and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            self._set["VLLM_CPU_OMP_THREADS_BIND"] = settings.threads_bind
            self._set["OMP_NUM_THREADS"] = (
                str(settings.threads) if settings.threads is not None else None
            )
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for name, value in self._set.items():
            self._saved[name] = os.environ.get(name)
            _put(name, value)

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            _put(name, value)


def _put(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def weights_gb(folder: str) -> float:
    """Size of a model folder's safetensors weights, in GiB."""
    path = Path(folder)
    if not path.is_dir():
        return 0.0
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / GIB


def host_available_gb() -> float:
    """Host memory available now, in GiB."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return math.inf
    return float(pages) / GIB
