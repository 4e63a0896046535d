"""Everyday calls of real client libraries, run against a deployment of the bundled model.

Each check takes the deployment's base URL, key and name; the test modules run them
against the transformers deployment and the vLLM one.
"""

from __future__ import annotations

import json

import openai
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel


class Place(BaseModel):
    city: str
    country: str


@tool
def weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def chat_model(base_url: str, key: str, name: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url, api_key=key, model=name, temperature=0, max_tokens=48, max_retries=0
    )


def langchain_forced_tool_and_loop(base_url: str, key: str, name: str) -> None:
    """bind_tools with a forced tool, then the whole loop back to a text answer."""
    llm = chat_model(base_url, key, name)
    question = HumanMessage("What is the weather in Paris?")
    called = llm.bind_tools([weather], tool_choice="weather").invoke([question])
    assert [call["name"] for call in called.tool_calls] == ["weather"]
    call = called.tool_calls[0]
    assert isinstance(call["args"].get("city"), str)
    result = ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = llm.bind_tools([weather], tool_choice="none").invoke([question, called, result])
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls


def langchain_structured_output(base_url: str, key: str, name: str) -> None:
    """with_structured_output on a pydantic model (LangChain's default: a JSON schema)."""
    place = chat_model(base_url, key, name).with_structured_output(Place)
    found = place.invoke("Name a city and the country it is in.")
    assert isinstance(found, Place) and found.city and found.country


def openai_parse(base_url: str, key: str, name: str) -> None:
    """The openai SDK's chat.completions.parse with a pydantic model."""
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    done = client.chat.completions.parse(
        model=name,
        messages=[{"role": "user", "content": "Name a city and the country it is in."}],
        response_format=Place,
        max_tokens=48,
    )
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Place) and parsed.city


def openai_responses(base_url: str, key: str, name: str) -> None:
    """responses.create, whole and streamed, and a forced call through it."""
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    asked = "Which city is the capital of France?"
    whole = client.responses.create(model=name, input=asked, max_output_tokens=24, temperature=0)
    assert "Paris" in whole.output_text
    text, kinds = "", []
    for event in client.responses.create(
        model=name, input=asked, max_output_tokens=24, temperature=0, stream=True
    ):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == whole.output_text and kinds[-1] == f"response.{whole.status}"
    tools = [
        {
            "type": "function",
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    called = client.responses.create(
        model=name,
        input="Weather in Rome?",
        tools=tools,
        tool_choice="required",
        max_output_tokens=40,
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and isinstance(json.loads(calls[0].arguments), dict)


CHECKS = [
    langchain_forced_tool_and_loop,
    langchain_structured_output,
    openai_parse,
    openai_responses,
]
