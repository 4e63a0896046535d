"""The cost of constrained decoding: tokens/s with a JSON schema against without, per engine.

The engine is loaded in process (no Ray): 8 concurrent requests of the same prompt,
alternately plain and under a JSON schema (xgrammar's grammar on every engine), rounds
interleaved so the machine's drift hits both alike. Each round's figure is its longest
answer's tokens over the round's time (a row's decoding speed, with 8 rows
decoding together); the result is the ratio of constrained to plain (target at
least 0.8).

    python -m bench.constrained [--quick] [--engine transformers|vllm|llamacpp|all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from devstack import BUNDLED_MODEL
from serving.engines.base import Engine, SamplingParams

TARGET = 0.8
ENGINES = ("transformers", "vllm", "llamacpp")
CONCURRENCY = 8
MAX_TOKENS = 64
SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "city": {"type": "string"},
            "hobbies": {"type": "array", "items": {"type": "string"}},
            "biography": {"type": "string"},
        },
        "required": ["name", "age", "city", "hobbies", "biography"],
    }
)
QUESTION = [{"role": "user", "content": "Describe a person, with a long biography, as JSON."}]


async def _round(engine: Engine, prompt: list[int], schema: str | None) -> tuple[int, float]:
    """The longest answer's tokens and the round's time: one row's decoding speed, which
    answers that end early (plain text often does) do not lower."""
    # Sampled, so the plain answers do not all stop early on a short greedy reply.
    params = SamplingParams(temperature=0.7, max_tokens=MAX_TOKENS, json_schema=schema, seed=1)
    started = time.perf_counter()
    done = await asyncio.gather(*(engine.generate(prompt, params) for _ in range(CONCURRENCY)))
    return max(d.completion_tokens for d in done), time.perf_counter() - started


async def _measure(engine: Engine, rounds: int) -> dict[str, Any]:
    prompt = engine.encode_chat(QUESTION)
    await _round(engine, prompt, SCHEMA)  # compiles the schema: not measured
    await _round(engine, prompt, None)
    totals = {"plain": [0, 0.0], "json_schema": [0, 0.0]}
    for _ in range(rounds):
        for name, schema in (("plain", None), ("json_schema", SCHEMA)):
            tokens, seconds = await _round(engine, prompt, schema)
            totals[name][0] += tokens
            totals[name][1] += seconds
    plain, constrained = (totals[n][0] / totals[n][1] for n in ("plain", "json_schema"))
    ratio = constrained / plain
    return {
        "concurrency": CONCURRENCY,
        "max_tokens": MAX_TOKENS,
        "rounds": rounds,
        "plain_tokens_per_s": round(plain, 1),
        "json_schema_tokens_per_s": round(constrained, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }


def measure(engine_name: str, quick: bool = False) -> dict[str, Any]:
    """Load the bundled model on `engine_name` and measure the ratio."""
    from serving.engines.factory import load_engine

    engine = load_engine(
        BUNDLED_MODEL, "cpu", batch_size=CONCURRENCY, engine=engine_name, kv_cache_gb=1
    )
    try:
        return {"engine": engine_name, **asyncio.run(_measure(engine, 2 if quick else 6))}
    finally:
        asyncio.run(engine.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    args = parser.parse_args(argv)
    engines = list(ENGINES) if args.engine == "all" else [args.engine]
    results = [measure(name, args.quick) for name in engines]
    print(json.dumps(results, indent=2))
    return 0 if all(r["meets_target"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
