"""The llama.cpp engine: what auto picks, how llama-server is sized, quantized weights,
the request it is sent, slots, and cancellation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from serving import catalog
from serving.engines.base import SamplingParams
from serving.engines.errors import ModelLoadError
from serving.engines.factory import choose_engine, load_engine
from serving.engines.llamacpp_engine import LlamaCppEngine, request_body
from serving.engines.llamacpp_grammar import to_gbnf
from serving.engines.llamacpp_server import (
    GIB,
    PER_SLOT_MIN_TOKENS,
    RUNTIME_GB,
    SPIN_COUNT,
    GGUFShape,
    gguf_shape,
    server_binary,
    server_command,
    server_env,
    server_settings,
)
from serving.model_source import resolve
from serving.spec import DeploymentSpec
from tests.serving.conftest import BUNDLED

pytestmark = [pytest.mark.model, pytest.mark.anyio]

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a very long story about the sea and its ships."}]
SHAPE = GGUFShape(context_length=8192, kv_bytes_per_token=23040)


@pytest.mark.parametrize(
    ("engine", "gpu_ready", "gguf", "llamacpp_ready", "chosen"),
    [
        ("auto", True, True, True, "vllm"),  # a GPU: vLLM, whatever the format
        ("auto", False, True, True, "llamacpp"),  # GGUF on CPU
        ("auto", False, True, False, "transformers"),  # ... without llama-server built
        ("auto", False, False, True, "transformers"),  # safetensors on CPU
        ("llamacpp", True, False, False, "llamacpp"),  # asked for: as asked
    ],
)
def test_auto_chooses_by_source_and_device(
    engine: str, gpu_ready: bool, gguf: bool, llamacpp_ready: bool, chosen: str
) -> None:
    assert choose_engine(engine, gpu_ready, gguf=gguf, llamacpp_ready=llamacpp_ready) == chosen


def test_the_spec_shows_llamacpp_for_a_gguf_on_cpu() -> None:
    cpu = DeploymentSpec(name="c", model=BUNDLED, hardware="cpu")
    assert cpu.effective_engine == "llamacpp"
    assert DeploymentSpec(name="g", model=BUNDLED, hardware="a10-single").effective_engine == (
        "vllm"
    )
    hub = DeploymentSpec(name="h", model="hf:org/model", hardware="cpu")
    assert hub.effective_engine == "transformers"


def test_bundled_gguf_shape() -> None:
    source = resolve(BUNDLED)
    shape = gguf_shape(str(Path(source.location) / str(source.gguf_file)))
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, f16 keys and values.
    assert shape == GGUFShape(context_length=8192, kv_bytes_per_token=30 * 3 * 128 * 2)


def test_slots_and_kv_pool_from_the_spec_and_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    cpu = catalog.hardware()["cpu"]
    small = server_settings(cpu, SHAPE, 100_000_000, parallel=8, context_length=2048)
    # Eight slots each hold a whole 2048-token context: a region of its own per slot.
    assert (small.parallel, small.context_size, small.threads) == (8, 8 * 2048, 2)
    assert not small.unified and small.per_request == 2048
    assert "--no-kv-unified" in server_command(Path("llama-server"), "m.gguf", 1, small)
    large = server_settings(cpu, SHAPE, 100_000_000, parallel=64, context_length=8192)
    # 64 × 8192 tokens would need 12 GB: the profile's memory less weights and runtime caps it.
    budget = (cpu.memory_gb - 100_000_000 / GIB - RUNTIME_GB) * GIB // SHAPE.kv_bytes_per_token
    assert large.context_size == budget
    # A region per slot still holds PER_SLOT_MIN_TOKENS: split, a request holds a 64th.
    assert budget // 64 >= PER_SLOT_MIN_TOKENS
    assert not large.unified and large.per_request == budget // 64
    pinned = server_settings(cpu, SHAPE, 100_000_000, 64, 8192, kv_cache_gb=0.5)
    assert pinned.context_size == int(0.5 * GIB // SHAPE.kv_bytes_per_token)
    # Under PER_SLOT_MIN_TOKENS a slot: one pool, which one long request may fill.
    assert pinned.context_size // 64 < PER_SLOT_MIN_TOKENS
    assert pinned.unified and pinned.per_request == pinned.context_size
    assert "--kv-unified" in server_command(Path("llama-server"), "m.gguf", 1, pinned)


def test_llama_server_spins_briefly_at_barriers_unless_the_replica_says_otherwise() -> None:
    assert server_env({"PATH": "/bin"}) == {"PATH": "/bin", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    # An operator's choice in the replica's environment stands.
    assert server_env({"GOMP_SPINCOUNT": "0"})["GOMP_SPINCOUNT"] == "0"
    passive = server_env({"OMP_WAIT_POLICY": "PASSIVE"})
    assert passive == {"OMP_WAIT_POLICY": "PASSIVE"}  # a spin count would override it


def test_request_body_turns_off_llamacpp_defaults_and_maps_every_field() -> None:
    params = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        max_tokens=20,
        stop=("\n\n",),
        json_schema=json.dumps({"type": "object"}),
        seed=2**40 + 5,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias=((7, -100.0),),
    )
    body = request_body([1, 2, 3], params, stream=True)
    assert body["prompt"] == [1, 2, 3] and body["n_predict"] == 20 and body["stream"]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 40)
    # llama.cpp's own defaults would change the answer: min_p 0.05, repeat penalty.
    assert body["min_p"] == 0.0 and body["repeat_penalty"] == 1.0
    # OpenAI's penalties count the whole output, not llama.cpp's last 64 tokens.
    assert body["repeat_last_n"] == 20
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert body["logit_bias"] == [[7, -100.0]]
    assert "\nroot ::= " in body["grammar"]  # xgrammar's compact JSON, spelt for llama.cpp
    assert body["seed"] == 5  # llama.cpp's seed is 32-bit
    assert body["stop"] == ["\n\n"]
    assert "seed" not in request_body([1], SamplingParams(), stream=False)


def test_a_safetensors_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="serves GGUF files"):
        LlamaCppEngine.load(resolve(str(tmp_path)), None, parallel=1)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppEngine]:
    """Its own engine (llama-server starts in about a second): these tests need no other."""
    if server_binary() is None:
        pytest.skip("llama-server is not built (make install builds it into .venv/bin)")
    loaded = load_engine(BUNDLED, "cpu", batch_size=8, engine="llamacpp", kv_cache_gb=0.25)
    assert isinstance(loaded, LlamaCppEngine)
    yield loaded
    asyncio.run(loaded.close())


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_weights_stay_quantized(llama: LlamaCppEngine) -> None:
    source = resolve(BUNDLED)
    path = Path(source.location) / str(source.gguf_file)
    size = path.stat().st_size
    kv = llama.settings.context_size * gguf_shape(str(path)).kv_bytes_per_token
    await llama.generate(llama.encode_chat(QUESTION), SamplingParams(max_tokens=4))
    # Dequantized to float32 the weights alone would be about 540 MB (5.5 × the file).
    # What the server holds beyond the file and its KV cache is llama.cpp's compute
    # buffers and its own code, a few tens of MB.
    assert _rss_bytes(llama.server.process.pid) < 1.3 * size + kv + 64 * 2**20


def test_the_running_server_has_the_spin_count(llama: LlamaCppEngine) -> None:
    expected = server_env().get("GOMP_SPINCOUNT")
    if expected is None:
        pytest.skip("this environment sets OMP_WAIT_POLICY, which the server keeps instead")
    environ = Path(f"/proc/{llama.server.process.pid}/environ").read_bytes().split(b"\0")
    assert f"GOMP_SPINCOUNT={expected}".encode() in environ


async def test_batch_size_above_the_slots_is_capped(llama: LlamaCppEngine) -> None:
    assert llama.batch_size == 8 == llama.settings.parallel
    llama.set_batch_size(64)
    try:
        assert llama.batch_size == 8  # the slots llama-server started with
    finally:
        llama.set_batch_size(8)


async def test_leaving_a_stream_frees_the_slot_in_llama_server(llama: LlamaCppEngine) -> None:
    llama.set_batch_size(1)  # one slot in gale: a request left running would block the next
    try:
        stream = llama.stream(llama.encode_chat(LONG), SamplingParams(max_tokens=1000))
        async for _ in stream:
            break
        await stream.aclose()

        async def busy_slots() -> int:
            client, _, _ = llama._per_loop()
            slots = (await client.get("/slots")).json()
            return sum(1 for slot in slots if slot["is_processing"])

        deadline = time.monotonic() + 10
        while await busy_slots() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await busy_slots() == 0
        done = await llama.generate(llama.encode_chat(QUESTION), SamplingParams(max_tokens=3))
        assert done.completion_tokens == 3
    finally:
        llama.set_batch_size(8)


async def test_a_request_takes_the_lowest_free_slot_not_the_likeliest(
    llama: LlamaCppEngine,
) -> None:
    # Two at once take slots 0 and 1 (the lowest free, in the order they arrive).
    await asyncio.gather(
        llama.generate(llama.encode_chat(QUESTION), SamplingParams(max_tokens=4)),
        llama.generate(llama.encode_chat(LONG), SamplingParams(max_tokens=4)),
    )
    # Alone, llama-server would give the second prompt again to slot 1, which holds it;
    # gale asks for slot 0, so the slots a step reads stay at the bottom.
    stream = llama.stream(llama.encode_chat(LONG), SamplingParams(max_tokens=500))
    async for _ in stream:
        break
    try:
        client, _, _ = llama._per_loop()
        busy = [slot["id"] for slot in (await client.get("/slots")).json() if slot["is_processing"]]
        assert busy == [0]
    finally:
        await stream.aclose()


async def test_a_prompt_the_slot_still_holds_is_computed_again(llama: LlamaCppEngine) -> None:
    prompt = llama.encode_chat(LONG)
    await llama.generate(prompt, SamplingParams(max_tokens=4))  # alone: slot 0
    # The engine's own body, sent to the same slot: llama.cpp reports what it computed.
    # Reused, that KV would have been computed within another batch (docs/engines.md).
    body = {**request_body(prompt, SamplingParams(max_tokens=1), stream=False), "id_slot": 0}
    body["response_fields"] = ["timings"]
    client, _, _ = llama._per_loop()
    timings = (await client.post("/completion", json=body)).json()["timings"]
    assert timings["prompt_n"] == len(prompt), (timings, len(prompt))


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is vLLM with a CUDA device")
def test_load_engine_gives_llamacpp_for_the_bundled_gguf_on_cpu() -> None:
    if server_binary() is None:
        pytest.skip("llama-server is not built (make install builds it into .venv/bin)")
    engine = load_engine(BUNDLED, "cpu", batch_size=2, engine="auto", kv_cache_gb=0.25)
    try:
        assert isinstance(engine, LlamaCppEngine)
        assert engine.batch_size == 2 and "llama.cpp" in engine.device_description
    finally:
        asyncio.run(engine.close())


def test_xgrammar_ebnf_spelt_as_gbnf() -> None:
    ebnf = (
        'root_a ::= (("{" [^\\0-\\x1f\\"] basic_x{0, -1} d{1, -1} e{2, 4} f{3, -1}))'
        " (=([ \\n]* [,}\\]:]))\n"
    )
    assert to_gbnf(ebnf) == ('root-a ::= (("{" [^\\x00-\\x1f\\"] basic-x* d+ e{2,4} f{3,})) \n')
    # Quoted text and character classes keep their underscores and braces.
    assert to_gbnf('a_b ::= "x_{y}" [_{]') == 'a-b ::= "x_{y}" [_{]'
