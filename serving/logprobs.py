"""Log probabilities in OpenAI's shapes: chat's `logprobs.content` and completions' lists.

The engines give each output token's text, log probability and best alternatives
(`TokenLogprob`); this module only shapes them. Chat answers carry
`{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
"refusal": null}`; completions answers carry `tokens`, `token_logprobs`,
`top_logprobs` (one `{token: logprob}` per token) and `text_offset` (where each
token starts in the choice's text, the echoed prompt included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.engines.base import TokenLogprob


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's (or streamed chunk's) `logprobs` object."""
    return {
        "content": [
            {
                **_scored(entry.token, entry.logprob),
                "top_logprobs": [_scored(token, logprob) for token, logprob in entry.top],
            }
            for entry in entries
        ],
        "refusal": None,
    }


def _scored(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


class CompletionLogprobs:
    """A completions choice's `logprobs`, piece by piece: offsets run on across pieces."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        """Where the next token starts in the choice's text."""

    def shape(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """The `logprobs` object of the next tokens."""
        offsets = []
        for entry in entries:
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return {
            "tokens": [entry.token for entry in entries],
            "token_logprobs": [entry.logprob for entry in entries],
            "top_logprobs": [dict(entry.top) for entry in entries],
            "text_offset": offsets,
        }
