"""One request's answer in OpenAI's shapes: whole responses, and the server-sent event stream.

`Reply` builds the chat or completions objects; `start_stream` waits for the
engine's first chunk (so a refusal still answers with a status) and then streams
the events, a forced tool call as its deltas, ending in `data: [DONE]`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from serving.engines.base import Chunk
from serving.engines.errors import EngineError
from serving.openai_types import APIError
from serving.request_metrics import Measure
from serving.tools import CallDeltas

ENGINE_FAILED = "the engine failed on this request; try again (the replica log has the details)"
# Serve's replica logger: lines land in the replica's log.
logger = logging.getLogger("ray.serve")


class Reply:
    """Builds one request's response objects in the chat or the completions shape."""

    def __init__(self, model: str, chat: bool) -> None:
        self.chat, self.model, self.created = chat, model, int(time.time())
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex

    def _base(self, object: str) -> dict[str, Any]:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model}

    def whole(
        self,
        text: str | None,
        finish: str,
        prompt: int,
        completion: int,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A non-streamed response (`message` replaces the chat message built from `text`)."""
        choice: dict[str, Any] = (
            {"message": message or {"role": "assistant", "content": text}}
            if self.chat
            else {"text": text}
        )
        return {
            **self._base("chat.completion" if self.chat else "text_completion"),
            "choices": [{"index": 0, **choice, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(prompt, completion),
        }

    def piece(
        self,
        delta: dict[str, Any] | str | None,
        finish: str | None,
        usage: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """One streamed chunk; `delta` None makes the usage-only chunk."""
        base = self._base("chat.completion.chunk" if self.chat else "text_completion")
        if delta is None:
            return {**base, "choices": [], "usage": usage}
        content = {"delta": delta} if self.chat else {"text": delta}
        return {
            **base,
            "choices": [{"index": 0, **content, "logprobs": None, "finish_reason": finish}],
        }


async def start_stream(
    chunks: AsyncIterator[Chunk],
    reply: Reply,
    include_usage: bool,
    measure: Measure,
    call: CallDeltas | None = None,
) -> StreamingResponse:
    # Wait for the first chunk so an engine that refuses the request answers with a status.
    try:
        first = await anext(chunks)
    except EngineError as error:
        raise engine_failed(error) from None
    except BaseException:  # the caller went away: free the request's slot now
        await _close(chunks)
        raise
    measure.first_token()
    return StreamingResponse(
        _events(first, chunks, reply, include_usage, measure, call),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(
    first: Chunk,
    chunks: AsyncIterator[Chunk],
    reply: Reply,
    include_usage: bool,
    measure: Measure,
    call: CallDeltas | None,
) -> AsyncIterator[str]:
    """A stream's events; with `call`, the text is a forced tool call sent as its deltas."""
    try:
        if reply.chat:
            yield _sse(reply.piece({"role": "assistant", "content": ""}, None))
        chunk = first
        while True:
            if chunk.text and call is not None:
                for delta in call.push(chunk.text):
                    yield _sse(reply.piece(delta, None))
            elif chunk.text:
                yield _sse(reply.piece({"content": chunk.text} if reply.chat else chunk.text, None))
            if chunk.finish_reason is not None:
                measure.stream_done(chunk.prompt_tokens, chunk.completion_tokens)
                finish: str = chunk.finish_reason
                if call is not None:
                    deltas, finish = call.finish(finish)
                    for delta in deltas:
                        yield _sse(reply.piece(delta, None))
                yield _sse(reply.piece({} if reply.chat else "", finish))
                if include_usage:
                    usage = _usage(chunk.prompt_tokens, chunk.completion_tokens)
                    yield _sse(reply.piece(None, None, usage))
                break
            chunk = await anext(chunks)
    except Exception as error:
        yield _sse(engine_failed(error).body())
    finally:
        await _close(chunks)
    yield "data: [DONE]\n\n"


async def _close(chunks: AsyncIterator[Chunk]) -> None:
    # Engines stream with async generators; closing one frees its request's slot.
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def engine_failed(error: Exception) -> APIError:
    # An engine's message can carry paths, device and build details: the log keeps them.
    logger.error("gale: generation failed: %s: %s", type(error).__name__, error)
    return APIError(503, ENGINE_FAILED, type="server_error", code="engine_error")


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
