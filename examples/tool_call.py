"""Have a gale deployment call a tool, run it, and get the answer, with the openai SDK.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...                   # from `gale deploy` or `gale keys create`
python examples/tool_call.py "What is the weather in Paris?"

`tool_choice="required"` (or a named function) makes gale constrain decoding to a
call whose arguments fit the tool's parameters, so even a small model returns a
valid call. The call's result goes back as a `tool` message, as in any tool loop.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from openai import OpenAI

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def get_weather(city: str, unit: str) -> dict[str, Any]:
    """A stand-in for a real weather service."""
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


def main() -> None:
    """Print the tool call, its result, and the model's answer."""
    endpoint = os.environ["GALE_ENDPOINT"]
    client = OpenAI(base_url=endpoint, api_key=os.environ["GALE_API_KEY"])
    # A deployment serves one model, listed under the deployment's name.
    model = client.models.list().data[0].id
    question = sys.argv[1] if len(sys.argv) > 1 else "What is the weather in Paris?"
    messages: list[Any] = [{"role": "user", "content": question}]
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
        max_tokens=64,
    )
    calls = reply.choices[0].message.tool_calls or []
    if not calls:  # ran out of max_tokens before the call was complete
        sys.exit(f"no tool call (finish_reason {reply.choices[0].finish_reason})")
    messages.append(reply.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        arguments = json.loads(call.function.arguments)
        print(f"call: {call.function.name}({call.function.arguments})")
        result = json.dumps(get_weather(**arguments))
        print(f"result: {result}")
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    answer = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=48
    )
    print(f"answer: {answer.choices[0].message.content}")


if __name__ == "__main__":
    main()
