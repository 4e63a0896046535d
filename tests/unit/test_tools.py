"""Tool-call shaping, pure: what tools and tool_choice ask for, and the prompt's messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.openai_types import APIError, ChatBody
from serving.tools import CallDeltas, call_schema, plan, template_messages, tool_call

ASK = [{"role": "user", "content": "Weather in Paris?"}]
F = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
G = {"type": "function", "function": {"name": "g"}}


def body(**fields: Any) -> ChatBody:
    return ChatBody.model_validate({"messages": ASK, **fields})


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"tools": [F, G], "tool_choice": "required"}, ["f", "g"]),
        ({"tools": [F, G], "tool_choice": {"type": "function", "function": {"name": "g"}}}, ["g"]),
    ],
)
def test_a_forced_call_admits_the_chosen_tools(fields: dict[str, Any], names: list[str]) -> None:
    schema = json.loads(plan(body(**fields), None).call_schema or "null")
    options = schema.get("anyOf", [schema])
    assert [o["properties"]["name"]["const"] for o in options] == names
    assert all(o["required"] == ["name", "arguments"] for o in options)


@pytest.mark.parametrize(
    ("fields", "fmt", "words"),
    [
        ({"tools": [F]}, None, "has none"),
        (
            {"tools": [F], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            None,
            "'x'",
        ),
        ({"tool_choice": "required"}, None, "needs tools"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_on_tool_choice(
    fields: dict[str, Any], fmt: str | None, words: str
) -> None:
    with pytest.raises(APIError) as refused:
        plan(body(**fields), fmt)
    assert refused.value.param == "tool_choice" and words in refused.value.message


def test_none_leaves_the_tools_out() -> None:
    assert plan(body(tools=[F], tool_choice="none"), None).tools == ()
    assert plan(body(), None).call_schema is None


def test_call_schema_of_one_tool_is_that_call() -> None:
    schema = call_schema(tuple(body(tools=[G]).tools or ()))
    assert schema["properties"]["arguments"] == {"type": "object"}


def test_a_decoded_call_becomes_openai_tool_calls() -> None:
    call = tool_call('{"name": "f", "arguments": {"a": 1}}')
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "f", "arguments": '{"a":1}'}


def arguments_of(deltas: list[dict[str, Any]]) -> str:
    return "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)


@pytest.mark.parametrize(
    "pieces",
    [
        ['{"name":"f", "arguments":{"a":1, "b":"}"}}'],
        ['{"na', 'me":"f', '"', ', "argu', 'ments":', '{"a"', ":1,", ' "b":"}"', "}", "}"],
    ],
)
def test_a_streamed_call_names_the_function_first_then_streams_its_arguments(
    pieces: list[str],
) -> None:
    deltas = CallDeltas()
    out = [delta for piece in pieces for delta in deltas.push(piece)]
    last, finish = deltas.finish("stop")
    out += last
    opening = out[0]["tool_calls"][0]
    assert opening["id"] == deltas.id and opening["type"] == "function"
    assert opening["function"] == {"name": "f", "arguments": ""}
    assert json.loads(arguments_of(out[1:])) == {"a": 1, "b": "}"}
    assert finish == "tool_calls"


def test_a_call_cut_off_keeps_its_finish_reason() -> None:
    deltas = CallDeltas()
    assert deltas.push('{"name":"f') == []
    assert deltas.finish("length") == ([{"content": '{"name":"f'}], "length")
    named = CallDeltas()
    out = named.push('{"name":"f","arguments":{"a":')
    last, finish = named.finish("length")
    assert arguments_of(out[1:] + last) == '{"a":' and finish == "length"


LOOP = [
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "21"},
]


def test_a_tool_loop_for_a_template_that_knows_tools() -> None:
    parsed = body(messages=LOOP, tools=[F], tool_choice="none")
    messages = template_messages(parsed.messages, (), native=True)
    assert messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}
    assert messages[2] == {"role": "tool", "content": "21", "tool_call_id": "c1"}


def test_a_tool_loop_as_text_for_any_other_template() -> None:
    parsed = body(messages=LOOP, tools=[F], tool_choice="required")
    messages = template_messages(parsed.messages, tuple(parsed.tools or ()), native=False)
    assert messages[0]["role"] == "system" and '"name": "f"' in messages[0]["content"]
    assert messages[2] == {"role": "assistant", "content": '{"name": "f", "arguments": {"a": 1}}'}
    assert messages[3] == {"role": "user", "content": "Result of f (c1): 21"}


@pytest.mark.parametrize("choice", [None, "auto"])
def test_auto_with_a_format_reads_the_answer_in_it(choice: str | None) -> None:
    planned = plan(body(tools=[F], tool_choice=choice), "hermes")
    assert planned.auto_format == "hermes" and not planned.forces_call
    assert [tool.function.name for tool in planned.tools] == ["f"]
