"""One request's answer in OpenAI's shapes: whole responses, and the server-sent event stream.

A request answers one or more choices (`n`, several completions prompts), each a
`Job` the engine generates on its own. `Reply` builds the chat or completions
objects; `generate_all` runs whole answers concurrently; `start_stream` waits for
the engines' first chunk (so a refusal still answers with a status) and then
streams every choice's events, tagged with its index, a forced tool call as its
deltas, ending in `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import StreamingResponse

from serving.engines.base import Chunk, Completion, Engine, SamplingParams
from serving.engines.errors import EngineError
from serving.logprobs import CompletionLogprobs, chat_logprobs
from serving.model_output import Parsed
from serving.openai_types import APIError
from serving.request_metrics import Measure
from serving.tools import CallDeltas, tool_call


@dataclass(frozen=True)
class Job:
    """One choice to generate: its prompt's token ids, its sampling, and the text put
    before its answer (the prompt, for a completions `echo`)."""

    prompt: list[int]
    params: SamplingParams
    echo: str = ""


ENGINE_FAILED = "the engine failed on this request; try again (the replica log has the details)"
# Serve's replica logger: lines land in the replica's log.
logger = logging.getLogger("ray.serve")


@dataclass
class Ask:
    """What a request asks of every choice's answer, beyond its text."""

    forced_call: bool = False
    """The text is a forced tool call: answer it as `tool_calls`."""
    logprobs: bool = False
    """Each choice carries its tokens' log probabilities."""
    stream: bool = False
    include_usage: bool = False
    read: Callable[[str], Parsed] | None = None
    """Reads a whole answer in the model's own format (tool calls it chose, reasoning);
    such answers are read once complete, streamed ones too."""


@dataclass
class Choice:
    """One choice being answered: its index, the text put before it (an echoed prompt),
    and how its streamed text becomes events."""

    index: int
    echo: str = ""
    call: CallDeltas | None = None
    scores: CompletionLogprobs = field(default_factory=CompletionLogprobs)
    completion_tokens: int = 0
    held: list[Chunk] = field(default_factory=list)
    """Chunks held until the answer is complete, when it is read in the model's format."""


class Reply:
    """Builds one request's response objects in the chat or the completions shape."""

    def __init__(self, model: str, chat: bool, ask: Ask | None = None) -> None:
        self.chat, self.model, self.created = chat, model, int(time.time())
        self.ask = ask or Ask()
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex

    def _base(self, object: str) -> dict[str, Any]:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model}

    def whole(self, choices: list[dict[str, Any]], prompt: int, completion: int) -> dict[str, Any]:
        """A non-streamed response with its choices (see `choice`)."""
        return {
            **self._base("chat.completion" if self.chat else "text_completion"),
            "choices": choices,
            "usage": _usage(prompt, completion),
        }

    def choice(self, index: int, done: Completion, echo: str = "") -> dict[str, Any]:
        """One whole choice from its completion (a forced call answered as `tool_calls`)."""
        finish: str = done.finish_reason
        logprobs: dict[str, Any] | None = None
        if self.ask.logprobs:
            logprobs = (
                chat_logprobs(done.logprobs)
                if self.chat
                else CompletionLogprobs(len(echo)).shape(done.logprobs)
            )
        if not self.chat:
            return _choice(index, {"text": echo + done.text}, logprobs, finish)
        message: dict[str, Any] = {"role": "assistant", "content": done.text}
        if self.ask.forced_call and finish == "stop":  # cut off by max_tokens: no call
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call(done.text)]}
            finish = "tool_calls"
        elif self.ask.read is not None:
            message, finish = _read_message(self.ask.read(done.text), finish)
        return _choice(index, {"message": message}, logprobs, finish)

    def piece(
        self,
        index: int,
        delta: dict[str, Any] | str,
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One streamed chunk of one choice."""
        base = self._base("chat.completion.chunk" if self.chat else "text_completion")
        content = {"delta": delta} if self.chat else {"text": delta}
        return {**base, "choices": [_choice(index, content, logprobs, finish)]}

    def usage_piece(self, usage: dict[str, int]) -> dict[str, Any]:
        """The last streamed chunk, with the usage of every choice."""
        base = self._base("chat.completion.chunk" if self.chat else "text_completion")
        return {**base, "choices": [], "usage": usage}

    def opening(self, choice: Choice) -> list[dict[str, Any]]:
        """A choice's first events: the assistant role (chat) or the echoed prompt."""
        if self.chat:
            return [self.piece(choice.index, {"role": "assistant", "content": ""})]
        if choice.echo:
            choice.scores.offset = len(choice.echo)
            return [self.piece(choice.index, choice.echo)]
        return []

    def events(self, choice: Choice, chunk: Chunk) -> list[dict[str, Any]]:
        """The events of one chunk of a choice's output, its finish included."""
        if self.ask.read is not None:
            return self._read_events(choice, chunk)
        out: list[dict[str, Any]] = []
        logprobs = None
        if self.ask.logprobs and chunk.logprobs:
            logprobs = (
                chat_logprobs(chunk.logprobs) if self.chat else choice.scores.shape(chunk.logprobs)
            )
        if choice.call is not None:
            deltas = choice.call.push(chunk.text) if chunk.text else []
            if logprobs is not None and not deltas:
                deltas = [{}]
            for delta in deltas:
                out.append(self.piece(choice.index, delta, None, logprobs))
                logprobs = None
        elif chunk.text or logprobs is not None:
            text: dict[str, Any] | str = {"content": chunk.text} if self.chat else chunk.text
            out.append(self.piece(choice.index, text, None, logprobs))
        if chunk.finish_reason is not None:
            choice.completion_tokens = chunk.completion_tokens
            finish: str = chunk.finish_reason
            if choice.call is not None:
                deltas, finish = choice.call.finish(finish)
                out.extend(self.piece(choice.index, delta) for delta in deltas)
            out.append(self.piece(choice.index, {} if self.chat else "", finish))
        return out

    def _read_events(self, choice: Choice, chunk: Chunk) -> list[dict[str, Any]]:
        """Hold a read answer's chunks; once complete, send it as deltas of its parts."""
        assert self.ask.read is not None
        choice.held.append(chunk)
        if chunk.finish_reason is None:
            return []
        choice.completion_tokens = chunk.completion_tokens
        message, finish = _read_message(
            self.ask.read("".join(c.text for c in choice.held)), chunk.finish_reason
        )
        scored = [entry for c in choice.held for entry in c.logprobs]
        logprobs = chat_logprobs(scored) if self.ask.logprobs and scored else None
        deltas: list[dict[str, Any]] = []
        if message.get("reasoning_content"):
            deltas.append({"reasoning_content": message["reasoning_content"]})
        if message.get("content"):
            deltas.append({"content": message["content"]})
        for i, call in enumerate(message.get("tool_calls", [])):
            deltas.append({"tool_calls": [{"index": i, **call}]})
        out = []
        for delta in deltas or [{}]:
            out.append(self.piece(choice.index, delta, None, logprobs))
            logprobs = None
        out.append(self.piece(choice.index, {}, finish))
        return out


def _read_message(parsed: Parsed, finish: str) -> tuple[dict[str, Any], str]:
    """The chat message of an answer read in the model's format, and its finish reason."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.reasoning is not None:
        message["reasoning_content"] = parsed.reasoning
    if parsed.calls:
        return {**message, "tool_calls": parsed.calls}, "tool_calls"
    return message, finish


def _choice(
    index: int, content: dict[str, Any], logprobs: dict[str, Any] | None, finish: str | None
) -> dict[str, Any]:
    return {"index": index, **content, "logprobs": logprobs, "finish_reason": finish}


async def generate_all(engine: Engine, jobs: Sequence[Job]) -> list[Completion]:
    """Every job's whole completion, generated concurrently; one failing fails them all."""
    tasks = [asyncio.ensure_future(engine.generate(job.prompt, job.params)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def start_stream(
    engine: Engine, jobs: Sequence[Job], reply: Reply, prompt_tokens: int, measure: Measure
) -> StreamingResponse:
    """Stream every job's choice, their events interleaved as they come."""
    merged = _merged([engine.stream(job.prompt, job.params) for job in jobs])
    # Wait for the first chunk so an engine that refuses the request answers with a status.
    try:
        first = await anext(merged)
    except EngineError as error:
        await merged.aclose()
        raise engine_failed(error) from None
    except BaseException:  # the caller went away: free the requests' slots now
        await merged.aclose()
        raise
    measure.first_token()
    choices = [
        Choice(i, job.echo, CallDeltas() if reply.ask.forced_call else None)
        for i, job in enumerate(jobs)
    ]
    return StreamingResponse(
        _events(first, merged, reply, choices, prompt_tokens, measure),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(
    first: tuple[int, Chunk],
    merged: AsyncGenerator[tuple[int, Chunk], None],
    reply: Reply,
    choices: list[Choice],
    prompt_tokens: int,
    measure: Measure,
) -> AsyncIterator[str]:
    """A stream's events: each choice's opening, its pieces, its finish; then usage."""
    try:
        for choice in choices:
            for event in reply.opening(choice):
                yield _sse(event)
        item: tuple[int, Chunk] | None = first
        while item is not None:
            index, chunk = item
            for event in reply.events(choices[index], chunk):
                yield _sse(event)
            item = await anext(merged, None)
        completion = sum(choice.completion_tokens for choice in choices)
        measure.stream_done(prompt_tokens, completion)
        if reply.ask.include_usage:
            yield _sse(reply.usage_piece(_usage(prompt_tokens, completion)))
    except Exception as error:
        yield _sse(engine_failed(error).body())
    finally:
        await merged.aclose()
    yield "data: [DONE]\n\n"


async def _merged(
    streams: list[AsyncIterator[Chunk]],
) -> AsyncGenerator[tuple[int, Chunk], None]:
    """The streams' chunks as they come, tagged with their stream's index; the first
    failure ends it; closing it closes every stream (freeing their slots)."""
    if len(streams) == 1:
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await _close(streams[0])
        return
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                queue.put_nowait((index, chunk))
            queue.put_nowait((index, None))
        except Exception as error:
            queue.put_nowait((index, error))
        finally:
            await _close(stream)

    tasks = [asyncio.ensure_future(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
