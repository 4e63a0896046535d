"""Stream a chat answer, and ask again if the replica sending it stopped mid-way.

gale calls again, by itself, a request whose replica died before the answer
started. A stream that had started cannot be repeated without the client seeing
it twice, so it ends with one error event instead (code `stream_interrupted`),
which the openai SDK raises as `APIError` while iterating: never a hang. This
script asks again from the start when that happens, a bounded number of times.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...
python examples/interrupted_stream.py "Name three rivers."
"""

from __future__ import annotations

import os
import sys

from openai import APIError, OpenAI

INTERRUPTED = "stream_interrupted"


def stream_answer(client: OpenAI, model: str, question: str, attempts: int = 3) -> str:
    """The whole streamed answer; asks again when a stream was interrupted."""
    for attempt in range(1, attempts + 1):
        parts: list[str] = []
        try:
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": question}],
                max_tokens=48,
                stream=True,
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
            return "".join(parts)
        except APIError as error:
            code = error.body.get("code") if isinstance(error.body, dict) else None
            if code != INTERRUPTED or attempt == attempts:
                raise
            print(f"(the stream was interrupted after {len(parts)} chunks; asking again)")
    raise AssertionError("unreachable")


def main() -> int:
    """Stream the answer to the question on the command line."""
    question = sys.argv[1] if len(sys.argv) > 1 else "Name three rivers."
    client = OpenAI(base_url=os.environ["GALE_ENDPOINT"], api_key=os.environ["GALE_API_KEY"])
    model = client.models.list().data[0].id
    print(stream_answer(client, model, question))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
