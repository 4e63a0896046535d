"""`POST /v1/responses`: OpenAI's Responses API, stateless, over the chat path.

A request (text or a list of input items, `instructions`, function `tools`,
`tool_choice`, `text.format`) is translated into a chat body and prepared by
`serving.chat.prepare_chat`, so it follows every rule of chat completions on both
engines (forced calls constrained to the tool's schema, JSON schemas by grammar,
the model's own format read by vLLM's parsers). The answer is a `response`
object whose `output` holds a `message` item (its `output_text`), `function_call`
items and a `reasoning` item; streamed, the events are those the `openai` SDK's
`responses.create(stream=True)` reads, from `response.created` to
`response.completed`. Nothing is stored: `previous_response_id` and
`conversation` are refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from serving.answering import answer_whole
from serving.chat import PreparedChat, prepare_chat
from serving.engines.base import Chunk, Completion, Engine
from serving.engines.errors import EngineError
from serving.openai_types import APIError, ChatBody, parse
from serving.replica_state import ServingState
from serving.replies import Reply, engine_failed
from serving.request_metrics import Measure, measure_of
from serving.responses_types import NamedFunction, ResponsesBody
from serving.tools import CallDeltas


def add_responses_route(
    app: FastAPI,
    engine: Engine,
    state: ServingState,
    authorize: Callable[[Request, ServingState], None],
    read_body: Callable[[Request], Awaitable[bytes]],
) -> None:
    """Serve `POST /v1/responses` on `app`, behind the same key check as every route."""

    @app.post("/v1/responses")
    async def responses(request: Request) -> Any:
        authorize(request, state)
        body = parse(ResponsesBody, await read_body(request))
        body.refuse_unsupported()
        try:
            chat = parse(ChatBody, json.dumps(body.chat_body()).encode())
            prepared = await prepare_chat(engine, state, chat)
        except APIError as error:
            error.param = _renamed(error.param)
            raise
        shaper = _Shaper(state.name, body, prepared)
        measure = measure_of(request)
        if body.stream:
            return await _stream(engine, prepared, shaper, measure)
        done = await answer_whole(engine, prepared.jobs, measure)
        message = Reply(state.name, True, prepared.ask).choice(0, done[0])
        items = shaper.items(message["message"])
        return shaper.response(items, message["finish_reason"], *_usage_of(done[0]))


# A chat field's name in a Responses request.
_RESPONSES_NAMES = {
    "messages": "input",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
}


def _renamed(param: str | None) -> str | None:
    """The Responses name of a chat error's field (messages are input items; instructions
    shift their indexes, so only `input` is named)."""
    head = (param or "").split(".", 1)[0]
    return _RESPONSES_NAMES.get(head, param)


def _usage_of(done: Any) -> tuple[int, int]:
    return done.prompt_tokens, done.completion_tokens


class _Shaper:
    """Builds one request's response object and output items."""

    def __init__(self, model: str, body: ResponsesBody, prepared: PreparedChat) -> None:
        self.id = "resp_" + uuid.uuid4().hex
        self.model, self.body, self.prepared = model, body, prepared
        self.created = int(time.time())
        self.message_id = "msg_" + uuid.uuid4().hex

    def response(
        self, output: list[dict[str, Any]], finish: str | None, prompt: int = 0, completion: int = 0
    ) -> dict[str, Any]:
        body = self.body
        status = {None: "in_progress", "length": "incomplete"}.get(finish, "completed")
        choice = body.tool_choice
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "model": self.model,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {},
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": choice.model_dump()
            if isinstance(choice, NamedFunction)
            else choice or "auto",
            "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
            "text": {"format": self._format()},
            "truncation": "disabled",
            "store": False,
            "usage": None
            if finish is None
            else {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
        }

    def _format(self) -> dict[str, Any]:
        form = self.body.text.format if self.body.text is not None else None
        return form.model_dump(by_alias=True, exclude_none=True) if form else {"type": "text"}

    def items(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """A chat message's parts as output items: reasoning, the text, the calls."""
        out = []
        if message.get("reasoning_content"):
            out.append(self.reasoning_item(message["reasoning_content"]))
        if message.get("content") or not message.get("tool_calls"):
            out.append(self.message_item(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            function = call["function"]
            out.append(self.call_item(call["id"], function["name"], function["arguments"]))
        return out

    def message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        return {
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else [],
        }

    def call_item(
        self, call_id: str, name: str, arguments: str, status: str = "completed"
    ) -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": "fc_" + call_id.removeprefix("call_"),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": status,
        }

    @staticmethod
    def reasoning_item(text: str) -> dict[str, Any]:
        return {
            "type": "reasoning",
            "id": "rs_" + uuid.uuid4().hex,
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}],
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


async def _stream(
    engine: Engine, prepared: PreparedChat, shaper: _Shaper, measure: Measure
) -> StreamingResponse:
    job = prepared.jobs[0]
    chunks = engine.stream(job.prompt, job.params)
    try:  # the first chunk first, so an engine that refuses answers with a status
        first = await anext(chunks)
    except EngineError as error:
        raise engine_failed(error) from None
    measure.first_token()
    return StreamingResponse(
        _events(first, chunks, prepared, shaper, measure),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


class _Events:
    """Numbered server-sent events of one response."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(
    first: Chunk,
    chunks: AsyncIterator[Chunk],
    prepared: PreparedChat,
    shaper: _Shaper,
    measure: Measure,
) -> AsyncIterator[str]:
    event = _Events()
    yield event("response.created", response=shaper.response([], None))
    yield event("response.in_progress", response=shaper.response([], None))
    ask, held, chunk = prepared.ask, [], first
    live_text = not ask.forced_call and ask.read is None
    call = CallDeltas() if ask.forced_call else None
    text, arguments, name_sent = "", "", False
    item_id = shaper.message_id
    try:
        if live_text:
            yield event(
                "response.output_item.added",
                output_index=0,
                item=shaper.message_item("", "in_progress"),
            )
            yield event(
                "response.content_part.added",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=_text_part(""),
            )
        while True:
            held.append(chunk)
            if live_text and chunk.text:
                text += chunk.text
                yield event(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=0,
                    content_index=0,
                    delta=chunk.text,
                    logprobs=[],
                )
            elif call is not None and chunk.text:
                for delta in call.push(chunk.text):
                    function = delta["tool_calls"][0]["function"]
                    if "name" in function and not name_sent:
                        name_sent = True
                        item = shaper.call_item(call.id, function["name"], "", "in_progress")
                        yield event("response.output_item.added", output_index=0, item=item)
                    elif function.get("arguments"):
                        arguments += function["arguments"]
                        yield event(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=0,
                            delta=function["arguments"],
                        )
            if chunk.finish_reason is not None:
                break
            chunk = await anext(chunks)
        measure.stream_done(chunk.prompt_tokens, chunk.completion_tokens)
        usage = (chunk.prompt_tokens, chunk.completion_tokens)
        done = Completion("".join(c.text for c in held), chunk.finish_reason, *usage)
        choice = Reply(shaper.model, True, ask).choice(0, done)
        output = shaper.items(choice["message"])
        if live_text:
            yield event(
                "response.output_text.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            )
            yield event(
                "response.content_part.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=_text_part(text),
            )
            output = [shaper.message_item(text)]
            yield event("response.output_item.done", output_index=0, item=output[0])
        elif name_sent and output and output[0]["type"] == "function_call":
            final = shaper.call_item(
                call.id if call else "", output[0]["name"], output[0]["arguments"]
            )
            output = [final]
            yield event(
                "response.function_call_arguments.done",
                item_id=final["id"],
                output_index=0,
                arguments=final["arguments"],
            )
            yield event("response.output_item.done", output_index=0, item=final)
        else:  # read once complete (or a call cut off): each item whole
            for index, item in enumerate(output):
                yield event("response.output_item.added", output_index=index, item=item)
                if item["type"] == "message":
                    part = item["content"][0]
                    yield event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=_text_part(""),
                    )
                    yield event(
                        "response.output_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        delta=part["text"],
                        logprobs=[],
                    )
                    yield event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=part["text"],
                        logprobs=[],
                    )
                    yield event(
                        "response.content_part.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=part,
                    )
                elif item["type"] == "function_call":
                    yield event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    )
                yield event("response.output_item.done", output_index=index, item=item)
        final_response = shaper.response(output, choice["finish_reason"], *usage)
        kind = (
            "response.incomplete"
            if final_response["status"] == "incomplete"
            else "response.completed"
        )
        yield event(kind, response=final_response)
    except Exception as error:
        failure = engine_failed(error)
        yield event("error", code=failure.code, message=failure.message, param=None)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
