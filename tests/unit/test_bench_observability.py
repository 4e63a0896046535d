"""The observability benchmark's arithmetic and picture, from made-up client results."""

from __future__ import annotations

from pathlib import Path

from bench.load import Result
from bench.observability import per_second, plot
from bench.report import figures


def test_tokens_and_ttft_per_second_of_the_run() -> None:
    start = 100.0
    results = [
        Result(True, 200, 3, start + 0.1, start + 1.5, [start + 0.4, start + 0.9, start + 1.2]),
        Result(True, 200, 2, start + 1.1, start + 2.2, [start + 1.3, start + 2.1]),
        Result(False, 503, 0, start + 1.0, start + 1.0),
    ]
    rows = per_second(results, start)
    assert [row["tokens_per_s"] for row in rows] == [2, 2, 1]
    assert [row["ttft_ms_p50"] for row in rows] == [300.0, 200.0, None]


def test_the_timeline_picture_and_the_overhead_row(tmp_path: Path) -> None:
    timeline = {
        "steps": [1, 4],
        "step_s": 10.0,
        "step_starts_s": [0.0, 10.5],
        "seconds": [{"t": t, "tokens_per_s": 10 + t, "ttft_ms_p50": 50.0} for t in range(20)],
        "gauges": [{"t": 2.0 * i, "queued": i % 3, "occupancy": 0.1 * i} for i in range(10)],
    }
    path = tmp_path / "timeline.png"
    assert plot(timeline, path)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not plot({**timeline, "seconds": []}, tmp_path / "none.png")

    summary = {"tokens_per_s": 0.0}
    overhead = {
        "concurrency": 8,
        "metrics_on": {**summary, "tokens_per_s": 98.0},
        "metrics_off": {**summary, "tokens_per_s": 100.0},
    }
    results = {"sections": {"metrics_overhead": {"result": overhead}}}
    [row] = [r for r in figures(results) if "metrics on vs off" in r["figure"]]
    assert (row["ratio"], row["met"]) == (0.98, True)
    # Two "on" runs far apart: the machine's load moved, so the ratio is not judged.
    overhead["on_runs_tokens_per_s"] = [60.0, 136.0]
    [row] = [r for r in figures(results) if "metrics on vs off" in r["figure"]]
    assert row["met"] is None and "noisy" in row["figure"]
