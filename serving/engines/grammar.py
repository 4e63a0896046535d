"""Grammar-constrained decoding with xgrammar: JSON schemas to per-row token masks.

Both engines constrain output with the same grammar: xgrammar's conversion of a JSON
schema without free whitespace (`any_whitespace=False`, compact separators), so even a
small model cannot wander into spaces and newlines until `max_tokens`. The vLLM engine
hands the schema to vLLM's own structured outputs (configured the same way); the
transformers engine compiles it here and keeps one matcher per batch row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import torch

# Compact JSON: no space after ':' or ','. xgrammar 0.2.8 still writes one space after
# ',' (mlc-ai/xgrammar#945); one fixed space, never free whitespace.
SEPARATORS = (",", ":")


def check_schema(schema: str) -> None:
    """Raise ValueError with xgrammar's reason if `schema` cannot constrain decoding."""
    import xgrammar as xgr

    try:
        json.loads(schema)
        xgr.Grammar.from_json_schema(schema, any_whitespace=False, separators=SEPARATORS)
    except (ValueError, RuntimeError) as error:
        # xgrammar's C++ errors start with a timestamp and a source path: keep the reason.
        reason = str(error).strip().splitlines()[0].split(": ", 1)[-1]
        raise ValueError(reason) from None


class GrammarCompiler:
    """Compiles JSON schemas against one tokenizer; compiled grammars are cached."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int]) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=True)
        self._compile = lru_cache(maxsize=64)(self._compile_uncached)

    def compile(self, schema: str) -> Any:
        """The compiled grammar of a JSON schema (slow the first time: call off the loop)."""
        return self._compile(schema)

    def _compile_uncached(self, schema: str) -> Any:
        return self._compiler.compile_json_schema(
            schema, any_whitespace=False, separators=SEPARATORS
        )


class RowGrammar:
    """One row's grammar state: which tokens may come next, and whether it has ended."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)

    def accept(self, token: int) -> None:
        """Advance past a sampled token (one the mask allowed)."""
        if not self._matcher.accept_token(token):
            raise ValueError(f"token {token} is not allowed by the grammar")

    @property
    def terminated(self) -> bool:
        """Whether the output is complete (the grammar accepts nothing more)."""
        return bool(self._matcher.is_terminated())

    def fill(self, bitmask: torch.Tensor, index: int) -> None:
        """Write the allowed next tokens into row `index` of `bitmask`."""
        self._matcher.fill_next_token_bitmask(bitmask, index)


def mask_logits(logits: torch.Tensor, grammars: Sequence[RowGrammar | None]) -> None:
    """Set to -inf, in place, each constrained row's logits its grammar does not allow."""
    rows = [i for i, grammar in enumerate(grammars) if grammar is not None]
    if not rows:
        return
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(len(grammars), logits.shape[-1])
    for i in rows:
        grammar = grammars[i]
        assert grammar is not None
        grammar.fill(bitmask, i)
    xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
