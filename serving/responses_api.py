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
from typing import Any, ClassVar, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from serving.answering import answer_whole
from serving.chat import PreparedChat, prepare_chat
from serving.engines.base import Chunk, Completion, Engine
from serving.engines.errors import EngineError
from serving.openai_types import (
    LEAVE_OUT,
    APIError,
    ChatBody,
    Float,
    Int,
    Unsupported,
    _one_of,
    _unset,
    parse,
    unsupported,
)
from serving.replica_state import ServingState
from serving.replies import Reply, engine_failed
from serving.request_metrics import Measure, measure_of
from serving.tools import CallDeltas

RESPONSES_UNSUPPORTED: Unsupported = {
    "previous_response_id": (_unset, "send the whole conversation as input (nothing is stored)"),
    "conversation": (_unset, "send the whole conversation as input (nothing is stored)"),
    "background": (_one_of(False), "leave it out or send false"),
    "include": (_one_of([]), LEAVE_OUT),
    "reasoning": (_unset, LEAVE_OUT),
    "max_tool_calls": (_unset, LEAVE_OUT),
    "prompt": (_unset, LEAVE_OUT + "; send input and instructions"),
    "top_logprobs": (_one_of(0), LEAVE_OUT),
    "truncation": (_one_of("disabled"), 'leave it out or send "disabled"'),
}


class ResponseTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None


class ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unsupported_fields: ClassVar[Unsupported] = RESPONSES_UNSUPPORTED

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[ResponseTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    max_output_tokens: Int | None = Field(default=None, ge=1)
    stream: StrictBool = False
    stream_options: dict[str, StrictBool] | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: StrictBool | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    max_tool_calls: Int | None = None
    prompt: Any = None
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    truncation: Literal["auto", "disabled"] | None = None
    # Accepted and dropped: they change nothing in the answer.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    def refuse_unsupported(self) -> None:
        """Raise an `APIError` for the first field set to something gale does not implement."""
        for name, (accepted, hint) in self.unsupported_fields.items():
            if name in self.model_fields_set and not accepted(getattr(self, name)):
                raise unsupported(name, hint)
        for key in set(self.stream_options or {}) - {"include_obfuscation"}:
            raise APIError(400, f"stream_options.{key}: unknown field", param="stream_options")

    def chat_body(self) -> dict[str, Any]:
        """The same request as a chat completions body."""
        chat: dict[str, Any] = {"messages": _messages(self.instructions, self.input)}
        for name in ("model", "temperature", "top_p", "parallel_tool_calls", "stream"):
            if getattr(self, name) is not None:
                chat[name] = getattr(self, name)
        if self.max_output_tokens is not None:
            chat["max_tokens"] = self.max_output_tokens
        if self.tools:
            chat["tools"] = [
                {
                    "type": "function",
                    "function": tool.model_dump(exclude_none=True, exclude={"type"}),
                }
                for tool in self.tools
            ]
        if isinstance(self.tool_choice, NamedFunction):
            chat["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice.name}}
        elif self.tool_choice is not None:
            chat["tool_choice"] = self.tool_choice
        form = self.text.format if self.text is not None else None
        if form is not None and form.type == "json_schema":
            inner = {"name": form.name or "answer", "schema": form.schema_, "strict": form.strict}
            if form.description is not None:
                inner["description"] = form.description
            chat["response_format"] = {"type": "json_schema", "json_schema": inner}
        elif form is not None:
            chat["response_format"] = {"type": form.type}
        return chat


def _messages(instructions: str | None, items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as chat messages: function calls join one assistant message."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input.{index}"
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _text(item, where)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        else:
            hint = "send message, function_call or function_call_output items"
            raise unsupported(f"{where}.type", hint, f"an input item of type {kind!r}")
    return messages


def _text(item: dict[str, Any], where: str) -> Any:
    content = item.get("content")
    if not isinstance(content, list):
        return content
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            hint = "send input_text parts"
            raise unsupported(f"{where}.content.{index}", hint, "a content part other than text")
        texts.append(part.get("text"))
    return "".join(t for t in texts if isinstance(t, str))


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
