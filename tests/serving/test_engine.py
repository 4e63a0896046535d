"""Both engines on the bundled model: per-request settings, streaming, cancelling, batching."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.engines.base import Engine, SamplingParams
from serving.engines.transformers_engine import TransformersEngine

pytestmark = [pytest.mark.model, pytest.mark.anyio]

QUESTIONS = [
    "What is the capital of France?",
    "Name a colour.",
    "What is 2 plus 2?",
    "Say hello in Spanish and then explain why greetings matter in every culture.",
]


def chat(engine: Engine, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


async def test_greedy_answer_and_usage(engine: Engine) -> None:
    prompt = chat(engine, QUESTIONS[0])
    done = await engine.generate(prompt, SamplingParams(max_tokens=16))
    assert "Paris" in done.text
    assert done.finish_reason == "stop"
    assert done.prompt_tokens == len(prompt)
    assert 1 <= done.completion_tokens <= 16


def transformers_only(engine: Engine) -> TransformersEngine:
    """The engine, when it is the transformers one (its static batches can be counted)."""
    if not isinstance(engine, TransformersEngine):
        pytest.skip("counts static batches, which only the transformers engine forms")
    return engine


async def test_concurrent_batch_matches_each_request_alone(engine: Engine) -> None:
    engine = transformers_only(engine)
    greedy = SamplingParams(max_tokens=8)
    prompts = [chat(engine, q) for q in QUESTIONS]
    alone = [(await engine.generate(p, greedy)).text for p in prompts]
    # One batch: four greedy rows of different lengths, plus rows sampling differently.
    sampled = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, max_tokens=8)
    short = SamplingParams(max_tokens=2)
    before = engine.batch_counts.copy()
    together = await asyncio.gather(
        *(engine.generate(p, greedy) for p in prompts),
        engine.generate(prompts[0], sampled),
        engine.generate(prompts[1], short),
    )
    assert engine.batch_counts - before == {6: 1}
    assert [done.text for done in together[:4]] == alone
    assert together[5].completion_tokens == 2
    assert together[5].finish_reason == "length"


async def test_stream_yields_pieces_then_finish(engine: Engine) -> None:
    prompt = chat(engine, QUESTIONS[3])
    chunks = [c async for c in engine.stream(prompt, SamplingParams(max_tokens=12))]
    assert len(chunks) > 3
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 12
    whole = await engine.generate(prompt, SamplingParams(max_tokens=12))
    assert "".join(c.text for c in chunks) == whole.text


async def test_leaving_a_stream_frees_its_row(engine: Engine) -> None:
    prompt = chat(engine, QUESTIONS[3])
    stream = engine.stream(prompt, SamplingParams(max_tokens=3000))
    async for _ in stream:
        break
    await stream.aclose()
    # Had the abandoned row kept running, this would wait for 3000 tokens (minutes).
    started = time.monotonic()
    done = await engine.generate(chat(engine, QUESTIONS[1]), SamplingParams(max_tokens=3))
    assert done.completion_tokens <= 3
    assert time.monotonic() - started < 30


async def test_cancelled_task_frees_its_row(engine: Engine) -> None:
    prompt = chat(engine, QUESTIONS[3])
    task = asyncio.create_task(engine.generate(prompt, SamplingParams(max_tokens=3000)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    await engine.generate(chat(engine, QUESTIONS[1]), SamplingParams(max_tokens=3))
    assert time.monotonic() - started < 30


async def test_batch_size_limits_each_batch(engine: Engine) -> None:
    engine = transformers_only(engine)
    engine.set_batch_size(2)
    try:
        assert engine.batch_size == 2
        before = engine.batch_counts.copy()
        prompts = [chat(engine, q) for q in QUESTIONS]
        done = await asyncio.gather(
            *(engine.generate(p, SamplingParams(max_tokens=3)) for p in prompts)
        )
        assert [d.completion_tokens for d in done] == [3, 3, 3, 3]
        assert engine.batch_counts - before == {2: 2}
    finally:
        engine.set_batch_size(8)
    with pytest.raises(ValueError):
        engine.set_batch_size(0)


async def test_context_overflow_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        async for _ in engine.stream([1] * 10, SamplingParams(max_tokens=engine.context_length)):
            pass
