"""The Responses API's request body, and its translation into a chat completions body.

`ResponsesBody.chat_body()` turns `input` items, `instructions`, function `tools`,
`tool_choice` and `text.format` into the chat body that `serving.chat` prepares;
stateful and unsupported fields are refused by name (docs/api.md, Responses).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from serving.openai_types import (
    LEAVE_OUT,
    APIError,
    Float,
    Int,
    Unsupported,
    _one_of,
    _unset,
    unsupported,
)

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
