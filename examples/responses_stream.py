"""Stream an answer from a gale deployment through OpenAI's Responses API, with the openai SDK.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...                   # from `gale deploy` or `gale keys create`
python examples/responses_stream.py "Which city is the capital of France?"

`responses.create(stream=True)` yields OpenAI's typed events; the text arrives in
`response.output_text.delta` events and the whole response in the last one.
Nothing is stored: send the whole conversation as `input` each time.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main() -> None:
    """Print the answer as it streams, then its status and usage."""
    client = OpenAI(base_url=os.environ["GALE_ENDPOINT"], api_key=os.environ["GALE_API_KEY"])
    # A deployment serves one model, listed under the deployment's name.
    model = client.models.list().data[0].id
    question = sys.argv[1] if len(sys.argv) > 1 else "Which city is the capital of France?"
    stream = client.responses.create(
        model=model,
        instructions="Answer in one sentence.",
        input=question,
        max_output_tokens=48,
        temperature=0,
        stream=True,
    )
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
        elif event.type in ("response.completed", "response.incomplete"):
            usage = event.response.usage
            tokens = usage.output_tokens if usage is not None else 0
            print(f"\nstatus: {event.response.status}, {tokens} tokens")


if __name__ == "__main__":
    main()
