"""The published vLLM comparison page is built from a run's figures, misses marked."""

from __future__ import annotations

from typing import Any

from bench.vllm_vs_serve import CONCURRENCY, page


def server(tokens: list[float], staggered: float, startup: float) -> dict[str, Any]:
    return {
        "levels": [
            {"concurrency": c, "tokens_per_s": t} for c, t in zip(CONCURRENCY, tokens, strict=True)
        ],
        "staggered": {"requests": 96, "window_s": 10.0, "tokens_per_s": staggered},
        "startup_s": startup,
    }


def test_page_marks_each_load_against_the_target() -> None:
    result = {
        "model": "smol",
        "max_tokens": 48,
        "max_num_seqs": 64,
        "kv_cache_gb": 1.5,
        "cpus": 2,
        "load_average_before": [0.5, 0.5, 0.5],
        "load_average_after": [1.0, 1.0, 1.0],
        "vllm_serve": server([30, 200, 500, 700], 300, 65),
        "gale_vllm": server([29, 170, 480, 690], 290, 68),
        "gale_transformers": server([25, 90, 200, 230], 160, 19),
        "gale_vllm_over_vllm_serve": {"1": 0.967, "8": 0.85, "32": 0.96, "64": 0.986,
                                      "staggered": 0.967},
        "gale_vllm_over_gale_transformers": {"1": 1.16, "8": 1.89, "32": 2.4, "64": 3.0,
                                             "staggered": 1.81},
    }  # fmt: skip
    text = page(result, "2026-01-01 00:00 UTC")
    rows = {line.split(" |")[0]: line for line in text.splitlines() if line.startswith("| c")}
    assert "0.85 (**no**)" in rows["| concurrency 8"]
    assert "0.967 (yes)" in rows["| concurrency 1"]
    assert "| 170.0 |" in rows["| concurrency 8"] and "| 90.0 |" in rows["| concurrency 8"]
    assert "staggered arrivals | 300.0 | 290.0 | 0.967 (yes)" in text
    assert "`vllm serve` 65 s" in text and "vLLM deployment 68 s" in text
