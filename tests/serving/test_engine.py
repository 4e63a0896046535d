"""Both engines on the bundled model: per-request settings, streaming, cancelling, batching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from serving.engines.base import Activity, Chunk, Engine, SamplingParams
from serving.engines.transformers_engine import TransformersEngine
from serving.engines.vllm_engine import VLLMEngine

pytestmark = [pytest.mark.model, pytest.mark.anyio]

QUESTIONS = [
    "Which city is the capital of France?",
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
    """The engine, when it is the transformers one (its admissions can be counted)."""
    if not isinstance(engine, TransformersEngine):
        pytest.skip("counts the transformers engine's own admissions and steps")
    return engine


async def test_concurrent_batch_matches_each_request_alone(engine: Engine) -> None:
    engine = transformers_only(engine)
    greedy = SamplingParams(max_tokens=8)
    prompts = [chat(engine, q) for q in QUESTIONS]
    alone = [(await engine.generate(p, greedy)).text for p in prompts]
    # One batch: four greedy rows of different lengths, plus rows sampling differently.
    sampled = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, max_tokens=8)
    short = SamplingParams(max_tokens=2)
    before = engine.admissions.copy()
    together = await asyncio.gather(
        *(engine.generate(p, greedy) for p in prompts),
        engine.generate(prompts[0], sampled),
        engine.generate(prompts[1], short),
    )
    assert engine.admissions - before == {6: 1}
    assert [done.text for done in together[:4]] == alone
    assert together[5].completion_tokens == 2
    assert together[5].finish_reason == "length"


async def first_chunk(stream: AsyncIterator[Chunk]) -> Chunk:
    return await anext(aiter(stream))


async def test_request_joins_a_running_batch_and_answers_as_alone(engine: Engine) -> None:
    """A late request starts at the next step, not after the batch; its cache is stacked right.

    The first request has the longer prompt, so the joiner's cache is padded on the left;
    the first ends first, so the batch's unused columns are then cut while the joiner runs.
    """
    engine = transformers_only(engine)
    first_params, late_params = SamplingParams(max_tokens=6), SamplingParams(max_tokens=40)
    first_prompt, late_prompt = chat(engine, QUESTIONS[3]), chat(engine, QUESTIONS[1])
    assert len(first_prompt) > len(late_prompt)
    first_alone = (await engine.generate(first_prompt, first_params)).text
    late_alone = await engine.generate(late_prompt, late_params)
    assert late_alone.completion_tokens > 12, "the late answer must outlive the first"

    admissions, steps = engine.admissions.copy(), engine.step_rows.copy()
    first_stream = engine.stream(first_prompt, first_params)
    opening = await first_chunk(first_stream)
    first_rest = asyncio.create_task(collect(first_stream))
    late = await engine.generate(late_prompt, late_params)
    first_tail, first_done = await first_rest

    assert engine.admissions - admissions == {1: 2}
    assert (engine.step_rows - steps)[2] > 0, "the two requests never decoded together"
    assert opening.text + first_tail == first_alone
    assert first_done.completion_tokens == 6
    assert late.text == late_alone.text
    assert late.completion_tokens == late_alone.completion_tokens


async def collect(stream: AsyncIterator[Chunk]) -> tuple[str, Chunk]:
    """The rest of a stream's text and its last chunk."""
    chunks = [chunk async for chunk in stream]
    return "".join(c.text for c in chunks), chunks[-1]


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
        before, steps_before = engine.admissions.copy(), engine.step_rows.copy()
        prompts = [chat(engine, q) for q in QUESTIONS]
        done = await asyncio.gather(
            *(engine.generate(p, SamplingParams(max_tokens=3)) for p in prompts)
        )
        assert [d.completion_tokens for d in done] == [3, 3, 3, 3]
        assert engine.admissions - before == {2: 2}
        assert max(engine.step_rows - steps_before) == 2
    finally:
        engine.set_batch_size(8)
    with pytest.raises(ValueError):
        engine.set_batch_size(0)


async def test_context_overflow_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        async for _ in engine.stream([1] * 10, SamplingParams(max_tokens=engine.context_length)):
            pass


async def test_activity_shows_rows_running_and_requests_queued(engine: Engine) -> None:
    """What the replica's gauges read: more requests than the batch holds queue for a slot."""
    size = engine.batch_size
    prompt = chat(engine, QUESTIONS[3])
    tasks = [
        asyncio.create_task(engine.generate(prompt, SamplingParams(max_tokens=24)))
        for _ in range(size + 2)
    ]
    busiest = None
    while not all(task.done() for task in tasks):
        now = engine.activity()
        assert now is not None and now.batch_size == size
        if now.running and now.queued and busiest is None:
            busiest = now
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert busiest is not None, "never saw a full batch with requests waiting"
    assert 0 < busiest.occupancy <= 1
    after = engine.activity()
    if not isinstance(engine, VLLMEngine):
        assert after == Activity(0, 0, size)
    else:
        # vLLM's scheduler stats carry its KV-cache use.
        assert after is not None and after.cache_usage is not None
