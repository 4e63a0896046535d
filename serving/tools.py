"""Tool calls: what a request's `tools` and `tool_choice` ask for, and the answer's shape.

A forced call (`tool_choice` `"required"` or a named function) is decoded under a JSON
schema that admits exactly `{"name": <a tool's name>, "arguments": <that tool's
parameters>}`, so any model, the bundled one included, answers with a call that
parses and fits the tool. `"auto"` needs the model's own tool-call format (the
catalog's `tool_call_format`); `"none"` answers in text with the tools left out of the
prompt. Tool calls and results in the conversation go into the chat template natively
when it knows tools, and as text otherwise (see `template_messages`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from serving.catalog import models
from serving.openai_types import APIError, ChatBody, Message, Tool

# What a forced call's arguments are constrained to when a tool declares no parameters.
ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}
# How a forced call's decoded text begins: the grammar writes the name first, compactly.
_HEAD = re.compile(r'\{"name":("(?:[^"\\]|\\.)*"),\s*"arguments":')


@dataclass(frozen=True)
class ToolPlan:
    """How one request uses its tools: the tools the prompt shows, and a forced call's schema."""

    tools: tuple[Tool, ...]
    call_schema: str | None
    """The JSON schema of the forced call; None when the answer is text."""
    auto_format: str | None = None
    """With `tool_choice: "auto"`: the model's tool-call format its answer is read in."""

    @property
    def forces_call(self) -> bool:
        """Whether the answer is a forced call."""
        return self.call_schema is not None


def plan(body: ChatBody, tool_call_format: str | None) -> ToolPlan:
    """Decide from `tools` and `tool_choice` what the prompt shows and what is decoded."""
    tools, choice = tuple(body.tools or ()), body.tool_choice
    if not tools:
        if choice is not None and choice != "none":
            raise APIError(400, "tool_choice needs tools; send tools too", param="tool_choice")
        return ToolPlan((), None)
    if choice == "none":
        return ToolPlan((), None)
    if choice is None or choice == "auto":
        if tool_call_format is None:
            raise APIError(
                400,
                "tool_choice 'auto' (the default when tools are sent) needs the model's own "
                "tool-call format, and this model has none; send tool_choice 'required' or "
                '{"type": "function", "function": {"name": ...}} to have gale force a call',
                param="tool_choice",
            )
        return ToolPlan(tools, None, tool_call_format)
    if choice == "required":
        chosen = tools
    else:
        name = choice.function.name
        chosen = tuple(tool for tool in tools if tool.function.name == name)
        if not chosen:
            known = ", ".join(repr(tool.function.name) for tool in tools)
            raise APIError(
                400,
                f"tool_choice names the function {name!r}, which is not among the tools ({known})",
                param="tool_choice",
            )
    return ToolPlan(tools, json.dumps(call_schema(chosen)))


def tool_call_format(model_id: str) -> str | None:
    """The catalog's tool-call format of a model; None for models outside the catalog."""
    model = models().get(model_id)
    return model.tool_call_format if model is not None else None


def reasoning_parser(model_id: str) -> str | None:
    """The catalog's reasoning parser of a model; None for models outside the catalog."""
    model = models().get(model_id)
    return model.reasoning_parser if model is not None else None


def call_schema(tools: tuple[Tool, ...]) -> dict[str, Any]:
    """A JSON schema admitting one call of any of `tools`: name and matching arguments."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": tool.function.parameters or ANY_ARGUMENTS,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def tool_call(text: str) -> dict[str, Any]:
    """The OpenAI `tool_calls` entry for a forced call's decoded JSON text."""
    call = json.loads(text)
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": json.dumps(call["arguments"], ensure_ascii=False, separators=(",", ":")),
        },
    }


def new_call_id() -> str:
    """A tool call id in OpenAI's form."""
    return "call_" + uuid.uuid4().hex[:24]


class CallDeltas:
    """A forced call's decoded text, as it streams, turned into chat deltas.

    The first delta carries the call's id, type and name (once the name is complete);
    the next ones carry the arguments' text as it comes. The last character decoded so
    far is held back: it may be the brace closing the call, not part of the arguments.
    """

    def __init__(self) -> None:
        self.id = new_call_id()
        self._text = ""
        self._sent: int | None = None  # where unsent argument text starts, once named

    def push(self, piece: str) -> list[dict[str, Any]]:
        """Deltas for a further piece of the decoded text."""
        self._text += piece
        out: list[dict[str, Any]] = []
        if self._sent is None:
            head = _HEAD.match(self._text)
            if head is None:
                return out
            self._sent = head.end()
            name = json.loads(head.group(1))
            function = {"name": name, "arguments": ""}
            out.append(
                {
                    "tool_calls": [
                        {"index": 0, "id": self.id, "type": "function", "function": function}
                    ]
                }
            )
        end = len(self._text) - 1
        if end > self._sent:
            out.append(_arguments_delta(self._text[self._sent : end]))
            self._sent = end
        return out

    def finish(self, reason: str) -> tuple[list[dict[str, Any]], str]:
        """The last deltas and the finish reason, when decoding ends for `reason`."""
        if self._sent is None:  # cut off before the name was complete: say what came
            return ([{"content": self._text}] if self._text else []), reason
        rest = self._text[self._sent :]
        if reason == "stop":
            return ([_arguments_delta(rest[:-1])] if rest[:-1] else []), "tool_calls"
        return ([_arguments_delta(rest)] if rest else []), reason


def _arguments_delta(text: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}


def template_messages(
    messages: list[Message], tools: tuple[Tool, ...], *, native: bool
) -> list[dict[str, Any]]:
    """The conversation as a chat template takes it, tool calls and results included.

    A template that knows tools (`native`) gets assistant `tool_calls` (arguments as
    objects, as Hugging Face templates expect) and `tool` messages as they are. Any
    other template gets text: a call as the JSON a forced call is decoded as, and a
    result as a user message `Result of <name> (<call id>): <content>`, and the tools
    themselves as a system message listing their JSON definitions.
    """
    names = {
        call.id: call.function.name for m in messages for call in (m.tool_calls or []) if call.id
    }
    out: list[dict[str, Any]] = []
    for message in messages:
        entry: dict[str, Any] = message.as_template_input()
        if message.tool_calls:
            calls = [
                {"name": call.function.name, "arguments": _arguments(call.function.arguments)}
                for call in message.tool_calls
            ]
            if native:
                entry["tool_calls"] = [
                    {"id": call.id, "type": "function", "function": function}
                    for call, function in zip(message.tool_calls, calls, strict=True)
                ]
            else:
                text = "\n".join(json.dumps(call, ensure_ascii=False) for call in calls)
                entry["content"] = f"{entry['content']}\n{text}".strip()
        if message.role == "tool":
            if native:
                entry["tool_call_id"] = message.tool_call_id
            else:
                name = names.get(message.tool_call_id or "", "a tool")
                entry = {
                    "role": "user",
                    "content": f"Result of {name} ({message.tool_call_id}): {entry['content']}",
                }
        out.append(entry)
    if tools and not native:
        listed = "\n".join(
            json.dumps(tool.function.model_dump(exclude_none=True), ensure_ascii=False)
            for tool in tools
        )
        out.insert(0, {"role": "system", "content": f"You can call these functions:\n{listed}"})
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
