"""Ask a gale deployment a question with the official openai SDK, streaming the answer.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...                   # from `gale deploy` or `gale keys create`
python examples/openai_chat.py "Which city is the capital of France?"
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main() -> None:
    """Stream one chat answer to stdout."""
    endpoint = os.environ["GALE_ENDPOINT"]
    client = OpenAI(base_url=endpoint, api_key=os.environ["GALE_API_KEY"])
    # A deployment serves one model, listed under the deployment's name.
    model = client.models.list().data[0].id
    question = sys.argv[1] if len(sys.argv) > 1 else "Which city is the capital of France?"
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
