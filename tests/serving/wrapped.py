"""An engine that hands every call to the real one, for a test to change one behaviour of."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from serving.engines.base import Chunk, Engine, SamplingParams


class Wrapped(Engine):
    """The real engine, for the subclasses below to change one behaviour of."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model_id, self.context_length = inner.model_id, inner.context_length
        self.vocab_size = inner.vocab_size
        self.device, self.device_description = inner.device, inner.device_description

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    def set_batch_size(self, size: int) -> None:
        self.inner.set_batch_size(size)

    def encode_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        return self.inner.encode_chat(messages, tools)

    def encode_text(self, prompt: str) -> list[int]:
        return self.inner.encode_text(prompt)

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[Chunk]:
        return self.inner.stream(prompt_ids, params)

    async def close(self) -> None:
        """The shared engine is closed by its fixture."""
