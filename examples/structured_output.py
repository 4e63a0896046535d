"""Ask a gale deployment for an answer shaped by a pydantic model, with the openai SDK.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...                   # from `gale deploy` or `gale keys create`
python examples/structured_output.py "Which city is the capital of France?"

`chat.completions.parse` sends the model's JSON schema as `response_format`; gale
constrains decoding to it, so the answer parses into the pydantic model.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI
from pydantic import BaseModel


class Capital(BaseModel):
    """The answer's shape."""

    city: str
    country: str


def main() -> None:
    """Print the parsed answer as JSON."""
    endpoint = os.environ["GALE_ENDPOINT"]
    client = OpenAI(base_url=endpoint, api_key=os.environ["GALE_API_KEY"])
    # A deployment serves one model, listed under the deployment's name.
    model = client.models.list().data[0].id
    question = sys.argv[1] if len(sys.argv) > 1 else "Which city is the capital of France?"
    reply = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": question}],
        response_format=Capital,
        temperature=0,
        max_tokens=64,
    )
    answer = reply.choices[0].message.parsed
    if answer is None:  # ran out of max_tokens before the JSON was complete
        sys.exit(f"no complete answer (finish_reason {reply.choices[0].finish_reason})")
    print(answer.model_dump_json())


if __name__ == "__main__":
    main()
