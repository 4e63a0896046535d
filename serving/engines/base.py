"""The engine interface: one shape for every engine, whatever its batching.

An engine tokenizes (`encode_chat`, `encode_text`) and streams completions of
token ids (`stream`). How requests are batched is the engine's own business:
the transformers engine runs its own decoding loop that admits callers between
steps; vLLM's `AsyncLLM` takes them one by one into its continuous batching.
Either way a caller awaits one stream per request, and leaving the stream early
(break, `aclose()`, cancellation) frees the request's slot.

This module imports no engine: `serving.engines.factory` picks and loads one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.engines.errors import EngineError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples: temperature 0 is greedy; top_k 0 and top_p 1 turn those off."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    stop: Sequence[str] = field(default_factory=tuple)
    json_schema: str | None = None
    """A JSON schema (as text) the output must match, by constrained decoding."""
    seed: int | None = None
    """Seeds this request's own sampling: the same request and seed give the same output."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token the output holds already (OpenAI's)."""
    frequency_penalty: float = 0.0
    """Subtracted from a token's logit once per time the output holds it (OpenAI's)."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to those tokens' logits at every step."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the text (kept where a parser reads them, e.g. a
    model's tool-call markers)."""
    logprobs: int | None = None
    """Return each output token's log probability and this many most likely alternatives
    (0: the token's own only); None returns none."""

    @property
    def adjusts_logits(self) -> bool:
        """Whether penalties or biases change this request's logits before sampling."""
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)

    @property
    def greedy(self) -> bool:
        """Whether this request picks the most likely token every step."""
        return self.temperature == 0


@dataclass(frozen=True)
class TokenLogprob:
    """One output token's log probability under the model (before any sampling setting
    changes it), with the most likely alternatives at its position, best first."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A piece of one request's output; the last one has `finish_reason` set.

    Token counts are running totals, so the last chunk carries the usage.
    """

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens produced since the last chunk, when the request asked for logprobs."""


@dataclass(frozen=True)
class Completion:
    """A whole request's output, as `Engine.generate` collects it."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Activity:
    """What an engine is doing at one moment, for the replica's gauges."""

    queued: int
    """Requests waiting for a batch slot."""
    running: int
    """Rows in the running batch."""
    batch_size: int
    cache_usage: float | None = None
    """Fraction of the KV cache in use, where the engine reports it (vLLM)."""

    @property
    def occupancy(self) -> float:
        """Rows running over the batch size."""
        return self.running / self.batch_size if self.batch_size else 0.0


class Engine(ABC):
    """A loaded model that tokenizes and streams completions for concurrent requests."""

    model_id: str
    """The model reference the engine was loaded from (a spec's `model` string)."""
    context_length: int
    """Most tokens (prompt plus completion) one request may hold."""
    vocab_size: int
    """Token ids run from 0 to one below this (what a logit_bias may name)."""
    device: Literal["cuda", "cpu"]
    device_description: str
    batch_invariant: bool = True
    """Whether a greedy answer is the same token for token alone and within a batch."""
    """A human line, e.g. 'CPU (no GPU visible)' or 'CUDA: NVIDIA A10G x1 (bfloat16)'."""

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Most requests generated together."""

    @abstractmethod
    def set_batch_size(self, size: int) -> None:
        """Change the batch size in place; batches already running keep their size."""

    @property
    def template_knows_tools(self) -> bool:
        """Whether the model's chat template renders tools, tool calls and tool results."""
        return False

    def activity(self) -> Activity | None:
        """Queued and running requests and cache use now (cheap, any thread); None if unknown."""
        return None

    @abstractmethod
    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of a conversation (and the tools it may call) in the model's chat
        template, ready for the reply."""

    @abstractmethod
    def encode_text(self, prompt: str) -> list[int]:
        """Token ids of a plain-text prompt."""

    @abstractmethod
    def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Chunk]:
        """Generate from `prompt_ids`, yielding text as it is produced (an async generator)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop generating, fail requests still waiting, and release the model."""

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Completion:
        """Generate to the end and return the whole text with its usage."""
        return await collect(self.stream(prompt_ids, params))


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """A whole completion from a stream's chunks (the last one carries finish and usage)."""
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    last = Chunk("")
    async for chunk in chunks:
        parts.append(chunk.text)
        logprobs.extend(chunk.logprobs)
        last = chunk
    if last.finish_reason is None:
        raise EngineError("the engine ended a stream without a finish reason")
    return Completion(
        "".join(parts),
        last.finish_reason,
        last.prompt_tokens,
        last.completion_tokens,
        tuple(logprobs),
    )


class HFTokenizerEngine(Engine):
    """An engine that tokenizes with a Hugging Face tokenizer (both engines do)."""

    tokenizer: Any
    _closed: bool = False

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        """Token ids run from 0 to one below this (what a logit_bias may name)."""
        return len(self.tokenizer)

    @property
    def template_knows_tools(self) -> bool:
        """Whether the model's chat template renders tools, tool calls and tool results."""
        template = getattr(self.tokenizer, "chat_template", None)
        return isinstance(template, str) and "tool_calls" in template and "tools" in template

    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of a conversation (and the tools it may call) in the model's chat
        template, ready for the reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError(f"{self.model_id} has no chat template; use /v1/completions")
        text = self.tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            tokenize=False,
            add_generation_prompt=True,
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_text(self, prompt: str) -> list[int]:
        """Token ids of a plain-text prompt."""
        return list(self.tokenizer(prompt)["input_ids"])

    def check_request(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Refuse what no engine can run: a closed engine, an empty or oversized prompt."""
        if self._closed:
            raise EngineError("the engine is closed")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) + params.max_tokens > self.context_length:
            raise ValueError(f"prompt plus max_tokens exceeds {self.context_length} tokens")
