"""Pure tests of stop strings, incremental decoding and per-row sampling."""

from __future__ import annotations

import pytest
import torch

from serving.engines.base import SamplingParams
from serving.engines.sampling import LogitAdjuster, RowSampler, adjust_logits
from serving.engines.text import IncrementalDecoder, StopScanner


def scan(stops: list[str], deltas: list[str]) -> tuple[list[str], bool, str]:
    """Feed deltas until a stop hits; return what was sent, whether it hit, and the flush."""
    scanner = StopScanner(stops)
    sent = []
    for delta in deltas:
        out, hit = scanner.push(delta)
        sent.append(out)
        if hit:
            return sent, True, ""
    return sent, False, scanner.flush()


@pytest.mark.parametrize(
    ("stops", "deltas", "sent", "hit", "flushed"),
    [
        ([], ["Hello", " world"], ["Hello", " world"], False, ""),
        (["\n"], ["Hello", " world\nmore"], ["Hello", " world"], True, ""),
        (["END"], ["abc E", "N", "D tail"], ["abc ", "", ""], True, ""),
        (["END"], ["abc E", "N", "x"], ["abc ", "", "ENx"], False, ""),
        (["END"], ["abc EN"], ["abc "], False, "EN"),
        (["Paris"], ["The capital is Par", "is."], ["The capital is ", ""], True, ""),
        (["ab", "b"], ["xab"], ["x"], True, ""),
        (["bc", "abcd"], ["ab", "c"], ["", "a"], True, ""),
        (["stop"], ["sto", "p"], ["", ""], True, ""),
        (["aa"], ["a", "a"], ["", ""], True, ""),
        (["xyz"], ["no match here"], ["no match here"], False, ""),
    ],
)
def test_stop_scanner(
    stops: list[str], deltas: list[str], sent: list[str], hit: bool, flushed: str
) -> None:
    assert scan(stops, deltas) == (sent, hit, flushed)


def test_stop_text_never_sent() -> None:
    text = "one two three four"
    for cut in range(1, len(text)):
        sent, hit, _ = scan([" three"], [text[:cut], text[cut:]])
        assert hit
        assert "".join(sent) == "one two"


# A byte-level vocabulary: "é" is two tokens, so its first half decodes to U+FFFD.
VOCAB = {1: b"H", 2: b"i", 3: b" ", 4: "é".encode()[:1], 5: "é".encode()[1:], 6: b"!"}


def decode(ids: list[int]) -> str:
    return b"".join(VOCAB[i] for i in ids).decode(errors="replace")


@pytest.mark.parametrize(
    ("ids", "deltas"),
    [
        ([1, 2, 6], ["H", "i", "!"]),
        ([1, 3, 4, 5, 6], ["H", " ", "", "é", "!"]),
        ([4, 5, 4, 5], ["", "é", "", "é"]),
    ],
)
def test_incremental_decoder(ids: list[int], deltas: list[str]) -> None:
    decoder = IncrementalDecoder(decode)
    assert [decoder.push(i) for i in ids] == deltas
    assert "".join(deltas) == decode(ids)


LOGITS = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]] * 4)


def sample_many(params: list[SamplingParams], times: int = 200) -> list[set[int]]:
    sampler = RowSampler(params, "cpu")
    generator = torch.Generator().manual_seed(0)
    seen: list[set[int]] = [set() for _ in params]
    for _ in range(times):
        for row, token in enumerate(sampler(LOGITS[: len(params)], generator).tolist()):
            seen[row].add(token)
    return seen


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        (SamplingParams(temperature=0), {1}),
        (SamplingParams(temperature=1.5, top_k=1), {1}),
        (SamplingParams(temperature=1.5, top_p=0.01), {1}),
        (SamplingParams(temperature=1.5, top_k=2), {1, 2}),
        (SamplingParams(temperature=2.0, top_k=0, top_p=1.0), {0, 1, 2, 3, 4}),
    ],
)
def test_sampler_respects_each_setting(params: SamplingParams, allowed: set[int]) -> None:
    (seen,) = sample_many([params])
    assert seen <= allowed
    if len(allowed) > 1:
        assert len(seen) > 1


def test_sampler_rows_keep_their_own_settings() -> None:
    rows = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=2.0, top_k=0),
        SamplingParams(temperature=1.0, top_k=2),
        SamplingParams(temperature=0),
    ]
    greedy, wide, top2, greedy_again = sample_many(rows)
    assert greedy == greedy_again == {1}
    assert len(wide) >= 4
    assert top2 == {1, 2}
    # Dropping rows keeps each survivor's settings.
    survivors = RowSampler(rows, "cpu").select(torch.tensor([0, 2]))
    generator = torch.Generator().manual_seed(1)
    picks = {tuple(survivors(LOGITS[:2], generator).tolist()) for _ in range(100)}
    assert {p[0] for p in picks} == {1}
    assert {p[1] for p in picks} == {1, 2}


def test_a_seeded_row_draws_the_same_whatever_its_neighbours() -> None:
    hot = SamplingParams(temperature=2.0, top_k=0)

    def draws(seed: int, neighbours: int) -> list[int]:
        rows = [hot] * (neighbours + 1)
        own = torch.Generator().manual_seed(seed)
        sampler = RowSampler(rows, "cpu", [None] * neighbours + [own])
        return [int(sampler(LOGITS[: len(rows)])[-1]) for _ in range(40)]

    assert draws(5, 0) == draws(5, 3)
    assert draws(5, 0) != draws(6, 0)
    # Keeping or joining rows keeps each one's own generator.
    own = torch.Generator().manual_seed(5)
    kept = RowSampler([hot, hot], "cpu", [None, own]).select(torch.tensor([1]))
    joined = RowSampler.join(RowSampler([hot], "cpu"), kept)
    assert [int(joined(LOGITS[:2])[1]) for _ in range(40)] == draws(5, 0)


def test_penalties_follow_openai_over_the_output_so_far() -> None:
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=1.0, logit_bias=((4, -3.0),))
    adjuster = LogitAdjuster(params, 5, "cpu")
    for token in (1, 1, 2):
        adjuster.accept(token)
    logits = LOGITS[0].clone()
    adjust_logits(logits.unsqueeze(0), [adjuster])
    # token 1: twice (-2 - 0.5); token 2: once (-1 - 0.5); token 4: biased by -3.
    assert logits.tolist() == pytest.approx([0.0, 0.5, 1.4, -1.0, -2.0])
    untouched = LOGITS[:2].clone()
    adjust_logits(untouched, [None, None])
    assert torch.equal(untouched, LOGITS[:2])
