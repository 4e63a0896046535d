"""The Hugging Face transformers engine: continuous batching of concurrent requests.

Concurrent `stream()` callers join a queue that one worker thread drains. When the
model is idle the worker waits a few milliseconds for company, then prefills what is
there (up to `batch_size` requests) and decodes one token per step for every row.
Between steps it admits requests that arrived meanwhile into free slots, so a request
never waits for a whole batch to finish (see `running_batch`). Each row samples with
its own settings and leaves the batch when it ends or its caller goes away.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch

from serving.engines.base import Activity, Chunk, HFTokenizerEngine, SamplingParams
from serving.engines.errors import EngineError, ModelLoadError
from serving.engines.grammar import GrammarCompiler
from serving.engines.running_batch import Request, Row, RunningBatch
from serving.engines.text import IncrementalDecoder

if TYPE_CHECKING:
    from serving.catalog import HardwareProfile
    from serving.model_source import ModelSource

# How long an idle engine waits for company after a first request arrives: requests sent
# together reach a replica spread over milliseconds, and one prefill for all of them costs
# less than one each. Requests arriving while a batch runs join it at the next step.
BATCH_WINDOW_S = 0.01


class TransformersEngine(HFTokenizerEngine):
    """An engine on a transformers causal LM, batching concurrent callers continuously."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        context_length: int,
        device: Literal["cuda", "cpu"],
        device_description: str,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length
        self.device = device
        self.device_description = device_description
        # One request at a time until told the deployment's batch size: a replica sets
        # it from its user_config before it takes traffic.
        self._batch_size = 1
        self._eos = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(self._eos, default=0)
        # One worker thread runs the model; callers on any event loop hand it requests.
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._running = 0  # rows in the running batch, written by the worker thread
        self.admissions: Counter[int] = Counter()
        """How many prefills admitted each number of requests (into an idle or running batch)."""
        self.step_rows: Counter[int] = Counter()
        """How many decode steps ran with each number of rows: what batching achieved."""
        # transformers 5 renamed `past_key_values` to `cache`; accept either generation.
        forward = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        # Built on the first constrained request: reading the vocabulary takes a moment.
        self._grammars: GrammarCompiler | None = None
        self._grammars_lock = threading.Lock()

    @classmethod
    def load(
        cls, source: ModelSource, profile: HardwareProfile | None = None
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
        )

    @property
    def batch_size(self) -> int:
        """Most requests generated together."""
        return self._batch_size

    def activity(self) -> Activity:
        """Requests waiting for a slot and rows decoding now (no cache figure: the cache
        grows with the batch)."""
        return Activity(len(self._waiting), self._running, self._batch_size)

    def set_batch_size(self, size: int) -> None:
        """Change the batch size; the next batch formed uses it."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._batch_size = int(size)

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Queue the request for the batch and yield its text as it is produced."""
        self.check_request(prompt_ids, params)
        request = Request(list(prompt_ids), params, asyncio.get_running_loop())
        if params.json_schema is not None:
            # Off the loop and off the worker: compiling must stall neither.
            request.grammar = await asyncio.to_thread(self._compile, params.json_schema)
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
        """Stop the worker after its current step, fail every request not finished, and
        wait (off the event loop) for the worker to leave, so the model is free after."""
        self._stop()
        atexit.unregister(self._stop_at_exit)
        worker = self._worker
        if worker is not None:
            await asyncio.to_thread(worker.join, 10)

    def _stop(self) -> None:
        with self._wake:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            self._wake.notify_all()
        for request in waiting:
            request.deliver(EngineError("the engine is closed"))

    def _stop_at_exit(self) -> None:
        # A worker thread still inside torch when the interpreter finalizes aborts the
        # process ("terminate called without an active exception"): end it first.
        self._stop()
        if self._worker is not None:
            self._worker.join(timeout=10)

    def _submit(self, request: Request) -> None:
        with self._wake:
            if self._closed:
                raise EngineError("the engine is closed")
            self._waiting.append(request)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="gale-generate", daemon=True
                )
                self._worker.start()
                atexit.register(self._stop_at_exit)
            self._wake.notify()

    def _take(self, running: int, *, wait: bool) -> list[Request]:
        """Waiting requests for the slots `running` rows leave free; with `wait`, block for
        one, then briefly for more. The batch size is read after waiting: it may change."""
        with self._wake:
            if wait:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                deadline = time.monotonic() + BATCH_WINDOW_S
                while len(self._waiting) < self._batch_size - running and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
            taken: list[Request] = []
            while self._waiting and running + len(taken) < self._batch_size and not self._closed:
                request = self._waiting.popleft()
                if not request.cancelled:
                    taken.append(request)
            return taken

    def _work(self) -> None:
        batch = RunningBatch(self.model, cache_arg=self._cache_arg, pad_id=self._pad, eos=self._eos)
        while not self._closed:
            idle = not batch
            if idle or batch.accepts_joins:
                joining = self._take(len(batch), wait=idle)
                if joining:
                    rows = self._rows(joining)
                    with self._failing_together(batch, rows):
                        batch.admit(rows)
            if self._closed:
                break
            self._running = len(batch)
            if batch:
                self.step_rows[len(batch)] += 1
                with self._failing_together(batch):
                    batch.step()
            self._running = len(batch)
        closed = EngineError("the engine is closed")
        for row in batch.rows:
            row.request.deliver(closed)

    def _rows(self, requests: list[Request]) -> list[Row]:
        self.admissions[len(requests)] += 1
        return [
            Row(
                request,
                IncrementalDecoder(
                    self._decode if request.params.skip_special_tokens else self._decode_all
                ),
                min(request.params.max_tokens, self.context_length - len(request.prompt_ids)),
                self._token_text,
            )
            for request in requests
        ]

    @staticmethod
    @contextmanager
    def _failing_together(batch: RunningBatch, joining: Sequence[Row] = ()) -> Iterator[None]:
        """Run one model call; if it fails, fail every request it touched and go on serving."""
        try:
            with torch.inference_mode():
                yield
        except Exception as error:  # reported to each caller; the engine keeps serving
            failed = EngineError(f"generation failed: {error}")
            for row in [*batch.rows, *joining]:
                row.request.deliver(failed)
            batch.clear()

    def _compile(self, schema: str) -> Any:
        with self._grammars_lock:
            if self._grammars is None:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                self._grammars = GrammarCompiler(self.tokenizer, int(vocab), self._eos)
        return self._grammars.compile(schema)

    def _token_text(self, token: int) -> str:
        return str(self.tokenizer.decode([token]))

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _decode_all(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


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
