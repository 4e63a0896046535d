"""Send several requests with a rate-limited key: read the limits, let the SDK wait out a 429.

gale answers every request of a key with a rate limit with OpenAI's x-ratelimit-*
headers, and refuses one over its limit with a 429 and Retry-After, which the
openai SDK honours when it retries. A spent token budget is a 429 of type
insufficient_quota: retrying does not help, so this script stops.

export GALE_ENDPOINT=$(gale endpoint my-bot)   # ends in /v1
export GALE_API_KEY=gale-...                   # e.g. from `gale keys create my-bot --rpm 60`
python examples/rate_limits.py 5
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI, RateLimitError


def main() -> int:
    """Send N short requests, printing what each answer says of the key's limits."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    # Retries honour Retry-After (the SDK waits up to 60 s when told to).
    client = OpenAI(
        base_url=os.environ["GALE_ENDPOINT"], api_key=os.environ["GALE_API_KEY"], max_retries=5
    )
    model = client.models.list().data[0].id
    for i in range(1, count + 1):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
            )
        except RateLimitError as error:
            code = error.body.get("code") if isinstance(error.body, dict) else None
            print(f"request {i}: refused ({code}): {error.message}")
            return 1
        answer = raw.parse()
        headers = raw.headers
        remaining = headers.get("x-ratelimit-remaining-requests", "no limit")
        reset = headers.get("x-ratelimit-reset-requests", "-")
        used = answer.usage.total_tokens if answer.usage else 0
        print(f"request {i}: ok, {used} tokens; requests left {remaining}, reset in {reset}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
