"""A model's own output format, read by vLLM's parsers: tool calls it chose, and reasoning.

With `tool_choice: "auto"` a model decides itself whether to answer in text or with
calls, written in its own format (the catalog's `tool_call_format`, e.g. Hermes'
`<tool_call>{...}</tool_call>`); a reasoning model marks its thinking (the catalog's
`reasoning_parser`, e.g. Qwen3's `<think>...</think>`). gale does not parse these
by hand: it runs vLLM's own parser of that name (`vllm.tool_parsers`,
`vllm.reasoning`) on the model's whole text, on both engines, and answers in
OpenAI's shape: `tool_calls` (arguments as JSON text), `content`, and
`reasoning_content` as vLLM names it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from serving.openai_types import APIError, Tool
from serving.tools import new_call_id


@dataclass(frozen=True)
class Parsed:
    """A whole answer read in the model's format."""

    content: str | None
    reasoning: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    """OpenAI `tool_calls` entries, in the order the model wrote them."""


@dataclass(frozen=True)
class OutputFormat:
    """How one request's answers are read: whose tool calls, whose reasoning."""

    tool_parser: str | None = None
    """vLLM's tool parser for `tool_choice: "auto"`; None when calls are not parsed."""
    reasoning_parser: str | None = None
    tools: tuple[Tool, ...] = ()
    parallel_tool_calls: bool = True
    """False keeps the first call only (as vLLM does)."""

    @property
    def parses(self) -> bool:
        """Whether answers are read at all (else their text is the content)."""
        return self.tool_parser is not None or self.reasoning_parser is not None

    def parse(self, tokenizer: Any, text: str) -> Parsed:
        """Read a whole answer: reasoning first, then calls in what is left."""
        request = _request(self.tools)
        reasoning, content = None, text
        if self.reasoning_parser is not None:
            parser = _reasoning_class(self.reasoning_parser)(tokenizer)
            reasoning, content = parser.extract_reasoning(text, request)
        if self.tool_parser is None or not content:
            return Parsed(content, reasoning)
        parser = _tool_class(self.tool_parser)(tokenizer, request.tools)
        found = parser.extract_tool_calls(content, request)
        if not found.tools_called:
            return Parsed(found.content if found.content is not None else content, reasoning)
        calls = [_call(call) for call in found.tool_calls]
        if not self.parallel_tool_calls:
            calls = calls[:1]
        return Parsed(found.content or None, reasoning, calls)


def check_parsers(tool_parser: str | None, reasoning_parser: str | None) -> None:
    """A 400 if vLLM's parsers cannot be loaded here (vLLM missing, or a name it lacks)."""
    try:
        if tool_parser is not None:
            _tool_class(tool_parser)
        if reasoning_parser is not None:
            _reasoning_class(reasoning_parser)
    except (ImportError, KeyError) as error:
        message = (
            f"this deployment cannot read the model's own format ({error}); "
            "send tool_choice 'required' or a named function"
        )
        raise APIError(400, message, param="tool_choice") from None


def _call(call: Any) -> dict[str, Any]:
    arguments = call.function.arguments
    with contextlib.suppress(ValueError):  # compact, as gale writes every call's arguments
        arguments = json.dumps(json.loads(arguments), ensure_ascii=False, separators=(",", ":"))
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


@lru_cache(maxsize=16)
def _tool_class(name: str) -> Any:
    from vllm.tool_parsers import ToolParserManager

    return ToolParserManager.get_tool_parser(name)


@lru_cache(maxsize=16)
def _reasoning_class(name: str) -> Any:
    from vllm.reasoning import ReasoningParserManager

    return ReasoningParserManager.get_reasoning_parser(name)


def _request(tools: tuple[Tool, ...]) -> Any:
    """The vLLM request object the parsers read the tools from."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest.model_validate(
        {
            "model": "gale",
            "messages": [{"role": "user", "content": ""}],
            "tools": [tool.model_dump(exclude_none=True) for tool in tools] or None,
            "tool_choice": "auto" if tools else "none",
        }
    )
