"""Reading a model's own format with vLLM's real parsers, on crafted model output."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from typing import Any

import pytest

from devstack import BUNDLED_MODEL
from serving.model_output import OutputFormat, check_parsers
from serving.model_source import resolve
from serving.openai_types import APIError, Tool

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM's parsers need vllm"
)

WEATHER = Tool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
)


@cache
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    source = resolve(BUNDLED_MODEL)
    return AutoTokenizer.from_pretrained(source.location, **source.pretrained_kwargs())


def read(text: str, **shape: Any) -> Any:
    return OutputFormat(tools=(WEATHER,), **shape).parse(tokenizer(), text)


def test_hermes_calls_become_openai_tool_calls() -> None:
    text = (
        'Let me look.<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call><tool_call>\n{"name": "weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    parsed = read(text, tool_parser="hermes")
    assert parsed.content == "Let me look."
    assert [call["function"]["name"] for call in parsed.calls] == ["weather", "weather"]
    assert [json.loads(c["function"]["arguments"]) for c in parsed.calls] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    first = parsed.calls[0]
    assert first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["arguments"] == '{"city":"Paris"}'
    # parallel_tool_calls false keeps the first call, as vLLM does.
    only = read(text, tool_parser="hermes", parallel_tool_calls=False)
    assert [json.loads(c["function"]["arguments"]) for c in only.calls] == [{"city": "Paris"}]


def test_text_without_a_call_is_the_content() -> None:
    parsed = read("Paris is sunny today.", tool_parser="hermes")
    assert parsed.content == "Paris is sunny today." and parsed.calls == []


def test_qwen3_reasoning_is_separated_before_calls_are_read() -> None:
    text = (
        "<think>The user wants weather.</think>\n\n"
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Lima"}}\n</tool_call>'
    )
    parsed = read(text, tool_parser="hermes", reasoning_parser="qwen3")
    assert parsed.reasoning is not None and "The user wants weather." in parsed.reasoning
    assert [json.loads(c["function"]["arguments"]) for c in parsed.calls] == [{"city": "Lima"}]
    plain = read("<think>easy</think>Paris.", reasoning_parser="qwen3")
    assert plain.reasoning == "easy" and plain.content == "Paris." and plain.calls == []


def test_a_parser_vllm_lacks_is_a_400_on_tool_choice() -> None:
    with pytest.raises(APIError) as refused:
        check_parsers("no-such-format", None)
    assert refused.value.status == 400 and refused.value.param == "tool_choice"
