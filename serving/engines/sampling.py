"""Choosing the next token for each row of a batch, each row with its own settings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serving.engines.base import SamplingParams


def seeded_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator of its own for a request with a seed; None for one without."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


class LogitAdjuster:
    """One row's presence and frequency penalties and logit bias, over its output so far."""

    def __init__(self, params: SamplingParams, vocab: int, device: torch.device | str) -> None:
        self.presence = params.presence_penalty
        self.frequency = params.frequency_penalty
        self.counts = torch.zeros(vocab, device=device)
        # A tokenizer may know a few ids more than the model has logits for.
        biased = [(i, b) for i, b in params.logit_bias if i < vocab]
        self.bias_ids = torch.tensor([i for i, _ in biased], dtype=torch.long, device=device)
        self.bias = torch.tensor([b for _, b in biased], dtype=torch.float32, device=device)

    def accept(self, token: int) -> None:
        """Count a token the row produced."""
        if token < self.counts.shape[0]:
            self.counts[token] += 1

    def apply(self, logits: torch.Tensor) -> None:
        """Adjust one row's logits (shape (vocab,)) in place."""
        if self.bias.numel():
            logits.index_add_(0, self.bias_ids, self.bias.to(logits.dtype))
        if self.presence or self.frequency:
            penalty = self.frequency * self.counts + self.presence * (self.counts > 0)
            logits -= penalty.to(logits.dtype)


def adjust_logits(logits: torch.Tensor, adjusters: Sequence[LogitAdjuster | None]) -> None:
    """Apply each row's penalties and bias to its logits (rows of shape (rows, vocab))."""
    for row, adjuster in enumerate(adjusters):
        if adjuster is not None:
            adjuster.apply(logits[row])


class RowSampler:
    """Per-row temperature, top-k and top-p for one batch, as tensors built once."""

    def __init__(
        self,
        params: Sequence[SamplingParams],
        device: torch.device | str,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        temperature = torch.tensor([p.temperature for p in params], device=device)
        # A temperature too small for float32 (it rounds to 0) is greedy too.
        self.greedy = temperature == 0
        self.all_greedy = bool(self.greedy.all())
        self.temperature = torch.where(self.greedy, 1.0, temperature).unsqueeze(1)
        self.top_k = torch.tensor([p.top_k for p in params], device=device)
        self.top_p = torch.tensor([p.top_p for p in params], device=device).unsqueeze(1)
        # A seeded row draws from its own generator (its row owns it), the others together.
        self.generators = list(generators) if generators is not None else [None] * len(params)
        self.seeded = any(g is not None for g in self.generators)

    def select(self, keep: torch.Tensor) -> RowSampler:
        """The sampler for the rows left after `keep` (indices) is applied to the batch."""
        picked = RowSampler.__new__(RowSampler)
        picked.greedy = self.greedy[keep]
        picked.all_greedy = bool(picked.greedy.all())
        picked.temperature = self.temperature[keep]
        picked.top_k = self.top_k[keep]
        picked.top_p = self.top_p[keep]
        picked.generators = [self.generators[i] for i in keep.tolist()]
        picked.seeded = any(g is not None for g in picked.generators)
        return picked

    @staticmethod
    def join(first: RowSampler, second: RowSampler) -> RowSampler:
        """The sampler for `first`'s rows followed by `second`'s."""
        joined = RowSampler.__new__(RowSampler)
        joined.greedy = torch.cat([first.greedy, second.greedy])
        joined.all_greedy = first.all_greedy and second.all_greedy
        joined.temperature = torch.cat([first.temperature, second.temperature])
        joined.top_k = torch.cat([first.top_k, second.top_k])
        joined.top_p = torch.cat([first.top_p, second.top_p])
        joined.generators = first.generators + second.generators
        joined.seeded = first.seeded or second.seeded
        return joined

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Next token id per row from last-position logits of shape (rows, vocab)."""
        best = logits.argmax(dim=-1)
        if self.all_greedy:
            return best
        return torch.where(self.greedy, best, self._sample(logits.float(), generator))

    def _sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Shifted so the best token is 0: a vanishing temperature then gives -inf for the
        # others and 0 for the best, never inf/inf (NaN).
        scaled = (logits - logits.max(dim=-1, keepdim=True).values) / self.temperature
        ordered, order = scaled.sort(dim=-1, descending=True)
        rank = torch.arange(ordered.shape[-1], device=ordered.device).unsqueeze(0)
        # top_k 0 means no limit.
        limit = torch.where(self.top_k > 0, self.top_k, ordered.shape[-1]).unsqueeze(1)
        ordered = ordered.masked_fill(rank >= limit, float("-inf"))
        probs = ordered.softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p; the first token always stays.
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= self.top_p, 0.0)
        picked = torch.multinomial(probs, 1, generator=generator)
        if self.seeded:
            for row, own in enumerate(self.generators):
                if own is not None:
                    picked[row] = torch.multinomial(probs[row], 1, generator=own)
        return order.gather(-1, picked).squeeze(1)
