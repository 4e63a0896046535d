"""The Hugging Face transformers engine: static batches of concurrent requests.

Concurrent `stream()` callers wait in an asyncio queue; a runner task takes up to
`batch_size` of them (waiting a few milliseconds while fewer are there) and runs
one decoding loop for the batch in a worker thread: a left-padded prefill, then
one token per step for every row with the KV cache. Each row samples with its own
settings and leaves the batch when it ends or its caller goes away. Requests that
arrive meanwhile wait for the next batch.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from serving.engines.base import (
    Chunk,
    EngineError,
    FinishReason,
    HFTokenizerEngine,
    ModelLoadError,
    SamplingParams,
)
from serving.engines.sampling import RowSampler
from serving.engines.text import IncrementalDecoder, StopScanner

if TYPE_CHECKING:
    from serving.catalog import HardwareProfile
    from serving.model_source import ModelSource

# How long a batch waits for company after its first request. Requests sent together
# reach a replica spread over tens of milliseconds (proxy, router), so once traffic
# has been concurrent the window widens; a lone caller keeps the short one.
BATCH_WINDOW_S = 0.01
BUSY_BATCH_WINDOW_S = 0.05


@dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Chunk | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def deliver(self, item: Chunk | BaseException) -> None:
        """Hand an item to the caller's event loop (safe from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            self.cancelled = True


class _Row:
    """One request's progress inside a running batch."""

    def __init__(self, request: _Request, decoder: IncrementalDecoder, limit: int) -> None:
        self.request = request
        self.decoder = decoder
        self.scanner = StopScanner(request.params.stop)
        self.limit = limit
        self.produced = 0

    def step(self, token: int, eos: frozenset[int]) -> bool:
        """Take one sampled token; send what it completes; return True when the row ends."""
        self.produced += 1
        if token in eos:
            return self._send(self.scanner.flush(), "stop")
        text, hit = self.scanner.push(self.decoder.push(token))
        if hit:
            return self._send(text, "stop")
        if self.produced >= self.limit:
            return self._send(text + self.scanner.flush(), "length")
        if text:
            self._send(text, None)
        return False

    def _send(self, text: str, finish: FinishReason | None) -> bool:
        prompt = len(self.request.prompt_ids)
        self.request.deliver(Chunk(text, finish, prompt, self.produced))
        return True


class TransformersEngine(HFTokenizerEngine):
    """An engine on a transformers causal LM, batching concurrent callers statically."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        context_length: int,
        device: Literal["cuda", "cpu"],
        device_description: str,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length
        self.device = device
        self.device_description = device_description
        self._batch_size = 1
        self.set_batch_size(batch_size)
        self._eos = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(self._eos, default=0)
        # One worker: the model runs one batch at a time. No thread starts until used.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gale-generate")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Queue[_Request] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.batch_counts: Counter[int] = Counter()
        """How many batches of each size have run: what batching achieved under load."""
        # transformers 5 renamed `past_key_values` to `cache`; accept either generation.
        forward = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

    @classmethod
    def load(
        cls, source: ModelSource, profile: HardwareProfile | None = None, batch_size: int = 8
    ) -> TransformersEngine:
        """Load tokenizer and model from a resolved source onto the GPU if one is visible."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = source.pretrained_kwargs()
        if torch.cuda.is_available():
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            gpus = torch.cuda.device_count()
            wanted = min(profile.gpus, gpus) if profile is not None and profile.is_gpu else 1
            placement: dict[str, Any] = {"device_map": "auto" if wanted > 1 else "cuda"}
            device: Literal["cuda", "cpu"] = "cuda"
            description = f"CUDA: {torch.cuda.get_device_name(0)} x{wanted} ({_dtype_name(dtype)})"
        else:
            dtype, placement, device = torch.float32, {}, "cpu"
            description = "CPU (no GPU visible)"
            if profile is not None and profile.is_gpu:
                description += f"; profile {profile.id} asks for {profile.gpus} GPU(s)"
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                source.location,
                dtype=dtype,
                use_safetensors=source.format == "safetensors" or None,
                **placement,
                **kwargs,
            )
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load {source.ref}: {error}") from error
        model.eval()
        context = (
            source.context_length or getattr(model.config, "max_position_embeddings", 0) or 2048
        )
        return cls(
            model,
            tokenizer,
            model_id=source.ref,
            context_length=int(context),
            device=device,
            device_description=description,
            batch_size=batch_size,
        )

    @property
    def batch_size(self) -> int:
        """Most requests generated together."""
        return self._batch_size

    def set_batch_size(self, size: int) -> None:
        """Change the batch size; the next batch formed uses it."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._batch_size = int(size)

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Queue the request for the next batch and yield its text as it is produced."""
        self.check_request(prompt_ids, params)
        request = _Request(list(prompt_ids), params, asyncio.get_running_loop())
        self._submit(request)
        try:
            while True:
                item = await request.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Also reached when the caller stops early: the worker drops the row.
            request.cancelled = True

    async def close(self) -> None:
        """Stop the batch loop, fail waiting requests, and release the worker thread."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
        while self._pending is not None and not self._pending.empty():
            self._pending.get_nowait().deliver(EngineError("the engine is closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, request: _Request) -> None:
        # The runner lives on the caller's loop; a new loop (or a crashed runner) gets a new one.
        if self._loop is not request.loop or self._runner is None or self._runner.done():
            self._loop = request.loop
            self._pending = asyncio.Queue()
            self._runner = request.loop.create_task(self._run(self._pending))
        assert self._pending is not None
        self._pending.put_nowait(request)

    async def _run(self, pending: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        last_size = 1
        while not self._closed:
            batch = [await pending.get()]
            window = BUSY_BATCH_WINDOW_S if last_size > 1 or not pending.empty() else BATCH_WINDOW_S
            deadline = loop.time() + window
            while len(batch) < self._batch_size:
                if not pending.empty():
                    batch.append(pending.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(pending.get(), remaining))
                except TimeoutError:
                    break
            batch = [request for request in batch if not request.cancelled]
            if not batch:
                continue
            self.batch_counts[len(batch)] += 1
            last_size = len(batch)
            try:
                await loop.run_in_executor(self._executor, self._generate, batch)
            except Exception as error:  # fail this batch, keep serving the next ones
                for request in batch:
                    request.deliver(EngineError(f"generation failed: {error}"))

    def _generate(self, batch: list[_Request]) -> None:
        with torch.inference_mode():
            self._decode_loop(batch)

    def _decode_loop(self, batch: list[_Request]) -> None:
        device = self.model.device
        rows = [
            _Row(
                r,
                IncrementalDecoder(self._decode),
                min(r.params.max_tokens, self.context_length - len(r.prompt_ids)),
            )
            for r in batch
        ]
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, request in enumerate(batch):
            ids[i, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            mask[i, width - len(request.prompt_ids) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits, last = _cache_of(out), out.logits[:, -1, :], positions[:, -1]
        sampler = RowSampler([r.params for r in batch], device)
        while True:
            chosen = sampler(logits)
            keep = [
                i
                for i, (row, token) in enumerate(zip(rows, chosen.tolist(), strict=True))
                if not row.request.cancelled and not row.step(token, self._eos)
            ]
            if not keep:
                return
            if self._closed:
                for i in keep:
                    rows[i].request.deliver(EngineError("the engine is closed"))
                return
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                rows = [rows[i] for i in keep]
                mask, last, chosen = mask[index], last[index], chosen[index]
                sampler = sampler.select(index)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            last = last + 1
            out = self.model(
                input_ids=chosen.unsqueeze(1),
                attention_mask=mask,
                position_ids=last.unsqueeze(1),
                use_cache=True,
                **{self._cache_arg: cache},
            )
            cache, logits = _cache_of(out), out.logits[:, -1, :]

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    found: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(v for v in value if isinstance(v, int))
    return frozenset(found)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
