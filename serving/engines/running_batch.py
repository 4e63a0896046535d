"""The rows a transformers model decodes together, and how rows join and leave.

All rows share one KV cache, left-padded to one width: an attention mask marks each
row's real positions and each row carries its own position ids. A row joins a running
batch by having its prompt prefilled on its own; its cache is then padded on the left
to the batch's width (or the batch's to its) and stacked under the others'. A row
leaves by having its cache rows dropped, and columns that no remaining row uses are
cut from the left, so the cache never grows wider than its widest live row needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from serving.engines.base import Chunk, FinishReason, SamplingParams, TokenLogprob
from serving.engines.grammar import RowGrammar, mask_logits
from serving.engines.sampling import LogitAdjuster, RowSampler, adjust_logits, seeded_generator
from serving.engines.text import IncrementalDecoder, StopScanner


@dataclass(eq=False)
class Request:
    """One caller's request while it waits and runs; its output goes back to its loop."""

    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Chunk | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    grammar: Any = None
    """The compiled grammar of `params.json_schema`, when the output is constrained."""

    def deliver(self, item: Chunk | BaseException) -> None:
        """Hand an item to the caller's event loop (safe from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening
            self.cancelled = True


class Row:
    """One request's progress inside a running batch."""

    def __init__(
        self,
        request: Request,
        decoder: IncrementalDecoder,
        limit: int,
        token_text: Callable[[int], str] = str,
    ) -> None:
        self.request = request
        self.token_text = token_text
        """One token's text, as logprobs name it."""
        self.logprobs: list[TokenLogprob] = []
        """Log probabilities of the tokens not sent yet, when the request asked for them."""
        self.decoder = decoder
        self.scanner = StopScanner(request.params.stop)
        self.limit = limit
        self.produced = 0
        self.grammar = RowGrammar(request.grammar) if request.grammar is not None else None
        self.generator: torch.Generator | None = None
        """This row's own random stream when its request has a seed (made on admission)."""
        self.adjuster: LogitAdjuster | None = None
        """This row's penalties and logit bias, when its request has any (made on admission)."""

    def step(
        self, token: int, eos: frozenset[int], scored: tuple[float, list[Any]] | None = None
    ) -> bool:
        """Take one sampled token (with its logprob and the top alternatives' (id, logprob),
        when the request asked for them); send what it completes; True when the row ends."""
        self.produced += 1
        if scored is not None and token not in eos:
            top = tuple((self.token_text(i), p) for i, p in scored[1])
            self.logprobs.append(TokenLogprob(self.token_text(token), scored[0], top))
        if self.adjuster is not None:
            self.adjuster.accept(token)
        if self.grammar is not None:
            self.grammar.accept(token)
        if token in eos:
            return self._send(self.scanner.flush(), "stop")
        text, hit = self.scanner.push(self.decoder.push(token))
        if hit:
            return self._send(text, "stop")
        if self.grammar is not None and self.grammar.terminated:
            return self._send(text + self.scanner.flush(), "stop")
        if self.produced >= self.limit:
            return self._send(text + self.scanner.flush(), "length")
        if text:
            self._send(text, None)
        return False

    def _send(self, text: str, finish: FinishReason | None) -> bool:
        prompt = len(self.request.prompt_ids)
        logprobs, self.logprobs = tuple(self.logprobs), []
        self.request.deliver(Chunk(text, finish, prompt, self.produced, logprobs))
        return True


class RunningBatch:
    """Rows decoding together: their shared KV cache, mask, positions and next-token logits.

    Between calls every row has logits ready for its next token. `admit` prefills new
    rows and stacks them under the running ones; `step` samples one token for every row,
    drops the rows that ended, and runs the model once for the rest.
    """

    def __init__(self, model: Any, *, cache_arg: str, pad_id: int, eos: frozenset[int]) -> None:
        self.model = model
        self.rows: list[Row] = []
        self._cache_arg = cache_arg
        self._pad = pad_id
        self._eos = eos
        self._cache: Any = None
        self._logits: torch.Tensor | None = None
        self._sampler: RowSampler | None = None
        self.clear()
        self.accepts_joins = True
        """False once the model's cache turns out not to be stackable (rows then wait)."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int:
        """Cache columns held per row (the widest live row's prompt and output so far)."""
        return int(self._mask.shape[1])

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill the new rows' prompts in one pass and add them to the batch."""
        if not rows:
            return
        device = self.model.device
        prompts = [row.request.prompt_ids for row in rows]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = _cache_of(out), out.logits[:, -1, :]
        for row in rows:
            row.generator = seeded_generator(row.request.params.seed, device)
            if row.request.params.adjusts_logits:
                row.adjuster = LogitAdjuster(row.request.params, logits.shape[-1], device)
        params = [row.request.params for row in rows]
        sampler = RowSampler(params, device, [row.generator for row in rows])
        if not self.rows:
            self._cache, self._mask, self._last = cache, mask, positions[:, -1]
            self._logits, self._sampler = logits, sampler
            self.accepts_joins = _stackable(cache)
        else:
            assert self._logits is not None and self._sampler is not None
            joined = max(self.width, width)
            _stack_caches(self._cache, cache, joined)
            self._mask = torch.cat([_pad_left(self._mask, joined), _pad_left(mask, joined)])
            self._last = torch.cat([self._last, positions[:, -1]])
            self._logits = torch.cat([self._logits, logits])
            self._sampler = RowSampler.join(self._sampler, sampler)
        self.rows.extend(rows)

    def step(self) -> None:
        """Sample each row's next token, hand it over, and decode one position for the rest."""
        if not self.rows:
            return
        assert self._logits is not None and self._sampler is not None
        scoring = _Scoring(self.rows, self._logits)  # the model's own, before any change
        # Penalties and bias first: the grammar's mask then still rules out what it forbids.
        adjust_logits(self._logits, [row.adjuster for row in self.rows])
        mask_logits(self._logits, [row.grammar for row in self.rows])
        chosen = self._sampler(self._logits)
        scored = scoring.of(chosen)
        keep = [
            i
            for i, (row, token) in enumerate(zip(self.rows, chosen.tolist(), strict=True))
            if not row.request.cancelled and not row.step(token, self._eos, scored.get(i))
        ]
        if not keep:
            self.clear()
            return
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, device=chosen.device)
            self._cache.batch_select_indices(index)
            self.rows = [self.rows[i] for i in keep]
            self._mask, self._last, chosen = self._mask[index], self._last[index], chosen[index]
            self._sampler = self._sampler.select(index)
            self._cut_unused_columns()
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
        self._last = self._last + 1
        out = self.model(
            input_ids=chosen.unsqueeze(1),
            attention_mask=self._mask,
            position_ids=self._last.unsqueeze(1),
            use_cache=True,
            **{self._cache_arg: self._cache},
        )
        self._cache, self._logits = _cache_of(out), out.logits[:, -1, :]

    def clear(self) -> None:
        """Forget every row and the cache."""
        self.rows = []
        self._cache, self._logits, self._sampler = None, None, None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._last = torch.zeros((0,), dtype=torch.long)

    def _cut_unused_columns(self) -> None:
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0 and self.accepts_joins:
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first:, :]
                layer.values = layer.values[:, :, first:, :]


class _Scoring:
    """Log probabilities of the rows that asked for them, from one step's raw logits."""

    def __init__(self, rows: Sequence[Row], logits: torch.Tensor) -> None:
        self.wanted = {
            i: row.request.params.logprobs
            for i, row in enumerate(rows)
            if row.request.params.logprobs is not None
        }
        self.scores = logits[list(self.wanted)].float().log_softmax(dim=-1) if self.wanted else None

    def of(self, chosen: torch.Tensor) -> dict[int, tuple[float, list[tuple[int, float]]]]:
        """Per scored row: the chosen token's logprob and its top alternatives (id, logprob)."""
        if self.scores is None:
            return {}
        rows = list(self.wanted)
        picked = self.scores.gather(1, chosen[rows].unsqueeze(1)).squeeze(1).tolist()
        most = max(self.wanted.values())
        values, ids = self.scores.topk(most, dim=-1) if most else (self.scores[:, :0],) * 2
        values_list, ids_list = values.tolist(), ids.tolist()
        return {
            row: (
                picked[j],
                list(zip(ids_list[j], values_list[j], strict=True))[: self.wanted[row]],
            )
            for j, row in enumerate(rows)
        }


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _stackable(cache: Any) -> bool:
    """Whether rows can be stacked into this cache: plain full-attention layers only.

    Sliding-window, quantized or offloaded layers keep state beyond their key and value
    tensors; batches on such models run without late joiners.
    """
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return (
        isinstance(layers, list)
        and bool(layers)
        and all(type(layer) is DynamicLayer for layer in layers)
    )


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _stack_caches(running: Any, joining: Any, width: int) -> None:
    """Put `joining`'s rows under `running`'s, both left-padded to `width` columns."""
    for mine, theirs in zip(running.layers, joining.layers, strict=True):
        mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
        mine.values = torch.cat(
            [_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)]
        )
