"""The llama.cpp engine: GGUF models at their quantized size, batched by llama.cpp.

The replica runs llama.cpp's own server (`llama-server`, see
`serving.engines.llamacpp_server`) on a loopback port and hands it each
request as token ids on its native `/completion` endpoint; gale's API layer
stays in front, so keys, errors, tools and the OpenAI shapes are the same as
with the other engines. llama.cpp decodes every busy slot in one step
(continuous batching); a request arriving mid-batch takes a free slot at the
next step. Tokenizing is gale's (the GGUF's own tokenizer, loaded by
transformers), so chat templates and tools behave as with the transformers engine.

Why the server and not the `llama-cpp-python` bindings: its `Llama` class runs
one request at a time, and batching across requests through the low-level API
would mean writing in Python the scheduler llama-server already has in C++
(docs/engines.md has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from serving.engines.llamacpp_grammar import schema_grammar
from serving.engines.llamacpp_server import (
    ServerProcess,
    ServerSettings,
    gguf_shape,
    require_server_binary,
    server_settings,
    start_server,
)
from serving.engines.slots import LowestFree, Slots

if TYPE_CHECKING:
    import httpx

    from serving.catalog import HardwareProfile
    from serving.model_source import ModelSource

logger = logging.getLogger("ray.serve")

# Only what the engine reads back: llama-server otherwise echoes every setting.
RESPONSE_FIELDS = ["content", "stop", "stop_type", "tokens_predicted", "tokens_evaluated"]


class LlamaCppEngine(HFTokenizerEngine):
    """An engine on a llama-server child process, which batches its slots continuously."""

    def __init__(
        self,
        server: ServerProcess,
        tokenizer: Any,
        *,
        model_id: str,
        context_length: int,
        settings: ServerSettings,
    ) -> None:
        self.server = server
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length
        self.settings = settings
        self.device = "cpu"
        # llama.cpp sums a batch's products in another order than one row's (its
        # batched matrix kernels), so a near tie between two tokens can go either way.
        self.batch_invariant = False
        self.device_description = (
            f"CPU (llama.cpp, {settings.parallel} slots, {settings.threads} threads, "
            f"{context_length} tokens per request)"
        )
        self._batch_size = settings.parallel
        # Per event loop (a replica has one): an HTTP client, which belongs to the loop it
        # first ran on, the admission gate of at most `batch_size` requests at once, and
        # the llama-server slot numbers free.
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, Slots, LowestFree]
        ] = weakref.WeakKeyDictionary()
        self._closed = False

    @classmethod
    def load(
        cls,
        source: ModelSource,
        profile: HardwareProfile | None,
        parallel: int,
        kv_cache_gb: float | None = None,
    ) -> LlamaCppEngine:
        """Start llama-server on the source's GGUF file with `parallel` slots (and a KV
        cache of `kv_cache_gb`, else sized from the profile)."""
        if source.format != "gguf" or source.gguf_file is None:
            raise ModelLoadError(
                f"the llama.cpp engine serves GGUF files; {source.ref} is {source.format} "
                "(use engine transformers or vllm for it)"
            )
        from transformers import AutoTokenizer

        binary = require_server_binary()
        path = str(Path(source.location) / source.gguf_file)
        shape = gguf_shape(path)
        settings = server_settings(
            profile, shape, Path(path).stat().st_size, parallel, source.context_length, kv_cache_gb
        )
        logger.info("gale: starting llama-server on %s with %s", path, settings)
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.pretrained_kwargs())
        server = start_server(binary, path, settings)
        context = min(settings.per_request, source.context_length or shape.context_length)
        engine = cls(
            server, tokenizer, model_id=source.ref, context_length=context, settings=settings
        )
        if profile is not None and profile.is_gpu:
            # gale's llama-server build runs on CPU: say so where a profile asked for GPUs.
            engine.device_description += f"; profile {profile.id} asks for {profile.gpus} GPU(s)"
        return engine

    def activity(self) -> Activity:
        """Requests waiting for a slot and requests in llama-server's slots (no cache figure)."""
        queued = running = 0
        for _, slots, _ in list(self._loops.values()):
            queued += slots.waiting
            running += slots.held
        return Activity(queued, running, self.batch_size)

    @property
    def batch_size(self) -> int:
        """Most requests decoded together: the admission limit, at most llama-server's slots."""
        return min(self._batch_size, self.settings.parallel)

    def set_batch_size(self, size: int) -> None:
        """Admit at most `size` requests at once; above the slots llama-server started with
        the rest wait (its slots are fixed at start: a redeploy raises them)."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        if size > self.settings.parallel:
            logger.warning(
                "gale: batch size %d is above llama-server's %d slots, fixed when the "
                "engine started; redeploy to raise it",
                size,
                self.settings.parallel,
            )
        self._batch_size = int(size)
        for loop, (_, slots, _) in list(self._loops.items()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(slots.set_limit, int(size))

    async def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Yield text as llama-server produces it; leaving early closes the connection,
        which cancels the request in llama-server and frees its slot."""
        self.check_request(prompt_ids, params)
        body = request_body(prompt_ids, params, stream=True)
        async with self._admitted(body) as client:
            try:
                async with client.stream("POST", "/completion", json=body) as response:
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        _refuse(response.status_code, text)
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        chunk = _chunk(json.loads(line[6:]), len(prompt_ids), params.logprobs)
                        if chunk.text or chunk.logprobs or chunk.finish_reason is not None:
                            yield chunk
                        if chunk.finish_reason is not None:
                            return
            except _http_errors() as error:
                raise EngineError(f"llama-server failed: {error}") from error
        raise EngineError("llama-server ended a stream without a finish reason")

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Completion:
        """Generate to the end in one response (a cancelled caller closes the connection,
        which llama-server notices and stops the request)."""
        if params.logprobs is not None:
            # Streamed, llama-server reports each token's probabilities as it comes and
            # none for the end-of-text token, which OpenAI's list leaves out too.
            return await collect(self.stream(prompt_ids, params))
        self.check_request(prompt_ids, params)
        body = request_body(prompt_ids, params, stream=False)
        async with self._admitted(body) as client:
            try:
                response = await client.post("/completion", json=body)
            except _http_errors() as error:
                raise EngineError(f"llama-server failed: {error}") from error
        if response.status_code != 200:
            _refuse(response.status_code, response.text)

        async def one() -> AsyncIterator[Chunk]:
            yield _chunk(response.json(), len(prompt_ids))

        return await collect(one())

    async def close(self) -> None:
        """Stop llama-server; requests still running fail."""
        if self._closed:
            return
        self._closed = True
        for loop, (_, slots, _) in list(self._loops.items()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(slots.fail_waiting, EngineError("the engine is closed"))
        here = self._loops.pop(asyncio.get_running_loop(), None)
        if here is not None:
            await here[0].aclose()
        await asyncio.to_thread(self.server.stop)

    @contextlib.asynccontextmanager
    async def _admitted(self, body: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
        """Hold a place in gale's admission gate and a llama-server slot for the block.

        The request asks for the lowest free slot (`id_slot`, `LowestFree`); when a batch
        size above the server's slots let more requests in than it has, there is none
        to ask for, and llama-server picks.
        """
        client, slots, numbers = self._per_loop()
        await slots.acquire()
        number = numbers.take()
        if number is not None:
            body["id_slot"] = number
        try:
            yield client
        finally:
            numbers.give(number)
            slots.release()

    def _per_loop(self) -> tuple[httpx.AsyncClient, Slots, LowestFree]:
        import httpx

        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            client = httpx.AsyncClient(base_url=self.server.url, timeout=None, limits=limits)
            # Which llama-server slot each request takes: the lowest free (`LowestFree`).
            # A replica has one loop; a second would share the slots, and a request
            # asking for a busy one waits in llama-server until it frees.
            found = (client, Slots(self._batch_size), LowestFree(self.settings.parallel))
            self._loops[loop] = found
        return found


def request_body(prompt_ids: Sequence[int], params: SamplingParams, stream: bool) -> dict[str, Any]:
    """llama-server's /completion request for a prompt and gale's sampling settings.

    Samplers llama.cpp turns on by default (min_p, repeat penalty) are turned off, so a
    request samples as it does on the other engines; penalties count the whole output
    (OpenAI's definition) rather than llama.cpp's last 64 tokens. A JSON schema goes as
    the grammar xgrammar builds for the other engines (compact JSON).
    """
    body: dict[str, Any] = {
        "prompt": list(prompt_ids),
        "n_predict": params.max_tokens,
        "stream": stream,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "repeat_last_n": params.max_tokens,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "stop": list(params.stop),
        # Every prompt is computed afresh, though the slot may still hold its start (the
        # chat template's opening, an earlier turn): reused KV was computed within another
        # batch, and with it the bundled model's greedy answer to "Which city is the
        # capital of France?" lost Paris. A sixth more tokens/s is the price
        # (docs/engines.md).
        "cache_prompt": False,
        "response_fields": RESPONSE_FIELDS,
    }
    if not params.skip_special_tokens:
        # llama-server decides for the whole server whether text keeps special tokens.
        raise ValueError(
            "the llama.cpp engine cannot return a model's special tokens, which reading "
            "its tool calls needs: use tool_choice 'required' or a named function, or "
            "deploy with engine vllm or transformers"
        )
    if params.logprobs is not None:
        # Probabilities from the model's own logits, before any sampling setting (as on
        # the other engines); at least one, so the chosen token's own is reported.
        body["n_probs"] = max(1, params.logprobs)
        body["post_sampling_probs"] = False
        body["response_fields"] = [*RESPONSE_FIELDS, "completion_probabilities"]
    if params.seed is not None:
        body["seed"] = params.seed % 2**32
    if params.logit_bias:
        body["logit_bias"] = [[token, bias] for token, bias in params.logit_bias]
    if params.json_schema is not None:
        body["grammar"] = schema_grammar(params.json_schema)
    return body


def _logprobs(data: dict[str, Any], top: int | None) -> tuple[TokenLogprob, ...]:
    """The tokens' log probabilities in a llama-server answer, `top` alternatives each."""
    if top is None:
        return ()
    return tuple(
        TokenLogprob(
            str(entry["token"]),
            float(entry["logprob"]),
            tuple((str(alt["token"]), float(alt["logprob"])) for alt in entry["top_logprobs"])[
                :top
            ],
        )
        for entry in data.get("completion_probabilities") or ()
    )


def _chunk(data: dict[str, Any], prompt_tokens: int, top: int | None = None) -> Chunk:
    finish: FinishReason | None = None
    if data.get("stop"):
        kind = data.get("stop_type")
        if kind == "limit":
            finish = "length"
        elif kind in ("eos", "word"):
            finish = "stop"
        else:
            raise EngineError(f"llama-server ended the request: {kind}")
    return Chunk(
        str(data.get("content", "")),
        finish,
        int(data.get("tokens_evaluated") or prompt_tokens),
        int(data.get("tokens_predicted") or 0),
        _logprobs(data, top),
    )


def _refuse(status: int, text: str) -> None:
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:300]
    if 400 <= status < 500:
        # What llama.cpp refuses in a request (a schema its grammar converter cannot
        # handle) is the caller's to fix: the API answers 400.
        raise ValueError(f"llama.cpp refused the request: {message}")
    raise EngineError(f"llama-server answered {status}: {message}")


def _http_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.HTTPError,)
