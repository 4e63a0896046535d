"""The vLLM engine: which engine auto picks, what the spec maps to, admission, the model cache."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from devstack import eventually_async
from serving import catalog
from serving.engines.base import Engine, SamplingParams
from serving.engines.errors import ModelLoadError
from serving.engines.factory import choose_engine, load_engine
from serving.engines.vllm_engine import VLLMEngine, cpu_settings, gpu_settings
from serving.engines.vllm_settings import VLLMSettings, cpu_thread_env
from serving.model_cache import hf_folder
from serving.model_source import ModelSource
from tests.serving.conftest import BUNDLED

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a very long story about the sea and its ships."}]


@pytest.mark.parametrize(
    ("engine", "gpu_ready", "chosen"),
    [
        ("auto", True, "vllm"),
        ("auto", False, "transformers"),
        ("vllm", False, "vllm"),
        ("vllm", True, "vllm"),
        ("transformers", True, "transformers"),
        ("transformers", False, "transformers"),
    ],
)
def test_choose_engine(engine: str, gpu_ready: bool, chosen: str) -> None:
    assert choose_engine(engine, gpu_ready) == chosen


def test_unknown_engine_refused() -> None:
    with pytest.raises(ModelLoadError, match="unknown engine"):
        choose_engine("tgi", True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_auto_is_transformers_without_a_cuda_device() -> None:
    # Logical GPUs on a CPU machine set CUDA_VISIBLE_DEVICES but give no device.
    assert choose_engine("auto") == "transformers"


@pytest.mark.parametrize(
    ("profile", "visible", "gpu_gb", "tensor_parallel", "utilization"),
    [
        ("a10-single", 1, 24, 1, 0.9),
        ("a10-x4", 4, 24, 4, 0.9),
        ("a10-x4", 1, 24, 1, 0.9),  # fewer GPUs visible than the profile names
        ("a10-single", 1, 80, 1, 0.3),  # a bigger GPU: only the profile's share of it
        ("t4-single", 1, 16, 1, 0.9),
    ],
)
def test_gpu_settings(
    profile: str, visible: int, gpu_gb: float, tensor_parallel: int, utilization: float
) -> None:
    settings = gpu_settings(catalog.hardware()[profile], visible, gpu_gb, max_num_seqs=16)
    assert settings.tensor_parallel_size == tensor_parallel
    assert settings.gpu_memory_utilization == pytest.approx(utilization)
    assert settings.max_num_seqs == 16
    assert settings.kv_cache_gb is None


def test_cpu_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = catalog.hardware()["cpu"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    whole = cpu_settings(cpu, weights_gb=0.5, max_num_seqs=8)
    assert whole.tensor_parallel_size == 1 and whole.max_num_seqs == 8
    # 4 GB profile: 0.5 GB of weights and 2 GB of runtime leave 1.5 GB (less if the host lacks it).
    assert whole.kv_cache_gb is not None and 1.0 <= whole.kv_cache_gb <= 1.5
    assert whole.threads_bind == "auto"
    assert cpu_settings(cpu, 0.5, 8, kv_cache_gb=1).kv_cache_gb == 1
    tiny = cpu_settings(cpu, weights_gb=3.5, max_num_seqs=8)
    assert tiny.kv_cache_gb == 1.0  # never below vLLM's useful minimum
    if len(os.sched_getaffinity(0)) > 1:
        # A replica given fewer CPUs than the node has (Ray sets OMP_NUM_THREADS).
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        share = cpu_settings(cpu, 0.5, 8)
        assert (share.threads_bind, share.threads) == ("nobind", 1)


def test_cpu_thread_env_leaves_thread_count_to_vllm_when_it_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ray's OMP_NUM_THREADS (the replica's num_cpus) must not reach a core-binding engine.
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with cpu_thread_env(VLLMSettings(max_num_seqs=8, threads_bind="auto")):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
        assert "OMP_NUM_THREADS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "2"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    with cpu_thread_env(VLLMSettings(max_num_seqs=8, threads_bind="nobind", threads=1)):
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "2"
    # A binding the operator chose is theirs: nothing is changed.
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    with cpu_thread_env(VLLMSettings(max_num_seqs=8, threads_bind="auto")):
        assert os.environ["OMP_NUM_THREADS"] == "2"


def _fake_gguf(folder: Path) -> ModelSource:
    folder.mkdir()
    (folder / "m.gguf").write_bytes(b"GGUF" + os.urandom(64))
    return ModelSource("m", "gguf", str(folder), gguf_file="m.gguf")


def test_cache_converts_once_when_two_replicas_start_together(tmp_path: Path) -> None:
    source = _fake_gguf(tmp_path / "src")
    calls: list[Path] = []
    both_waiting = threading.Barrier(2)

    def convert(_: ModelSource, target: Path) -> None:
        calls.append(target)
        time.sleep(0.2)  # hold the lock while the other replica arrives
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"weights")

    def start() -> str:
        both_waiting.wait()
        return hf_folder(source, tmp_path / "cache", convert=convert)

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(start())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1
    folder = Path(results[0])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    # Nothing half-built is left beside it; a later start reuses it without converting.
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [folder.name]
    assert hf_folder(source, tmp_path / "cache", convert=convert) == str(folder)
    assert len(calls) == 1


def test_cache_leaves_nothing_when_conversion_fails(tmp_path: Path) -> None:
    source = _fake_gguf(tmp_path / "src")

    def broken(_: ModelSource, target: Path) -> None:
        (target / "config.json").write_text("{}")
        raise ModelLoadError("no space left")

    with pytest.raises(ModelLoadError):
        hf_folder(source, tmp_path / "cache", convert=broken)
    assert [p for p in (tmp_path / "cache").iterdir() if p.is_dir()] == []


def test_safetensors_sources_are_used_as_they_are(tmp_path: Path) -> None:
    source = ModelSource("m", "safetensors", str(tmp_path))
    assert hf_folder(source, tmp_path / "cache") == str(tmp_path)


@pytest.fixture
def vllm(engine: Engine) -> VLLMEngine:
    """The session's engine, when it is the vLLM one."""
    if not isinstance(engine, VLLMEngine):
        pytest.skip("a vLLM engine test")
    return engine


async def wait_until_idle(engine: VLLMEngine, timeout: float = 30) -> None:
    """Wait (with a deadline) until vLLM holds no request: nothing left running there."""
    await eventually_async(
        lambda: not (engine.admitted or engine.llm.get_num_unfinished_requests()),
        timeout,
        "vLLM holding no request",
    )


@pytest.mark.model
@pytest.mark.anyio
async def test_vllm_maps_the_profile(vllm: VLLMEngine) -> None:
    assert vllm.settings.max_num_seqs == 8 and vllm.batch_size == 8
    assert vllm.settings.tensor_parallel_size == 1
    assert vllm.device == "cpu" and "vLLM" in vllm.device_description
    assert vllm.context_length == 8192  # the catalog's figure


@pytest.mark.model
@pytest.mark.anyio
async def test_batch_size_admits_that_many_at_once(vllm: VLLMEngine) -> None:
    vllm.set_batch_size(2)
    peak = 0

    async def run(text: str) -> int:
        nonlocal peak
        done = 0
        prompt = vllm.encode_chat([{"role": "user", "content": text}])
        async for chunk in vllm.stream(prompt, SamplingParams(max_tokens=8)):
            peak = max(peak, vllm.admitted)
            done = chunk.completion_tokens
        return done

    try:
        assert vllm.batch_size == 2
        counts = await asyncio.gather(*(run(f"Count to {n}.") for n in range(5)))
        assert peak == 2
        assert all(1 <= count <= 8 for count in counts)
    finally:
        vllm.set_batch_size(8)
    # Above max_num_seqs (fixed at start) the engine says so and vLLM queues the rest.
    vllm.set_batch_size(64)
    assert vllm.batch_size == 8
    vllm.set_batch_size(8)


@pytest.mark.model
@pytest.mark.anyio
async def test_leaving_a_stream_aborts_it_in_vllm(vllm: VLLMEngine) -> None:
    vllm.set_batch_size(1)  # one slot: a request left running would block the next
    try:
        stream = vllm.stream(vllm.encode_chat(LONG), SamplingParams(max_tokens=4000))
        async for _ in stream:
            break
        await stream.aclose()
        await wait_until_idle(vllm)
        started = time.monotonic()
        done = await vllm.generate(vllm.encode_chat(QUESTION), SamplingParams(max_tokens=3))
        assert done.completion_tokens == 3
        assert time.monotonic() - started < 30
        # A caller cancelled while it waits for its slot leaves no trace either.
        first = asyncio.create_task(
            vllm.generate(vllm.encode_chat(LONG), SamplingParams(max_tokens=4000))
        )
        waiting = asyncio.create_task(
            vllm.generate(vllm.encode_chat(QUESTION), SamplingParams(max_tokens=3))
        )
        # The first holds the slot, the second waits for it.
        await eventually_async(lambda: vllm.admitted >= 1, 30, "the first request admitted")
        for task in (first, waiting):
            task.cancel()
        for task in (first, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        await wait_until_idle(vllm)
    finally:
        vllm.set_batch_size(8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_runs_vllm_on_a_gpu() -> None:
    engine = load_engine(BUNDLED, "a10-single", batch_size=4)
    try:
        assert isinstance(engine, VLLMEngine)
        assert engine.device == "cuda" and engine.settings.tensor_parallel_size == 1
        assert engine.settings.gpu_memory_utilization is not None
        prompt = engine.encode_chat(QUESTION)
        done = asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=16)))
        assert "Paris" in done.text
    finally:
        asyncio.run(engine.close())
