"""Text bookkeeping shared by engines: incremental detokenizing and stop strings (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas.

    Decoding token by token breaks characters split across tokens and spaces that
    depend on the previous token, so each delta is the difference between decoding
    a short window with and without the new tokens. A trailing U+FFFD means a
    character is still incomplete: wait for the next token.
    """

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes (maybe empty)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""


class StopScanner:
    """Finds stop strings in streamed text and holds back what could begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._text = ""
        self._sent = 0

    def push(self, delta: str) -> tuple[str, bool]:
        """Add text; return what may be sent now, and whether a stop string was hit."""
        self._text += delta
        # Everything before `_sent` was checked, and no stop can start there.
        hits = [i for i in (self._text.find(s, self._sent) for s in self._stops) if i >= 0]
        if hits:
            out = self._text[self._sent : min(hits)]
            self._sent = len(self._text)
            return out, True
        keep = self._held_back()
        end = len(self._text) - keep
        out = self._text[self._sent : end]
        self._sent = max(self._sent, end)
        return out, False

    def flush(self) -> str:
        """The text held back, when generation ends without a stop string."""
        out = self._text[self._sent :]
        self._sent = len(self._text)
        return out

    def _held_back(self) -> int:
        tail = self._text[self._sent :]
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(tail)), longest, -1):
                if tail.endswith(stop[:size]):
                    longest = size
                    break
        return longest
