"""Wall time of CLI commands: gale's against Ray Serve's own, median of repeated runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def time_command(argv: list[str], runs: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Median, min and max wall seconds of `runs` runs (after one warm-up run)."""
    times: list[float] = []
    codes: set[int] = set()
    for attempt in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, timeout=120, check=False)
        elapsed = time.perf_counter() - started
        codes.add(done.returncode)
        if attempt:  # the first run warms the file cache
            times.append(elapsed)
    return {
        "command": " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)),
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "runs": runs,
        "exit_codes": sorted(codes),
    }


def measure(dashboard_url: str, token: str, runs: int) -> dict[str, Any]:
    """`gale --help` vs `serve --help`, `gale list` vs `serve status` on the running head."""
    env = dict(os.environ)
    ray_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    gale, serve = str(BIN / "gale"), str(BIN / "serve")
    results = {
        "gale_help": time_command([gale, "--help"], runs, env),
        "serve_help": time_command([serve, "--help"], runs, env),
        "gale_list": time_command([gale, "list"], runs, env),
        "serve_status": time_command([serve, "status", "--address", dashboard_url], runs, ray_env),
    }
    failed = {name: r["exit_codes"] for name, r in results.items() if r["exit_codes"] != [0]}
    if failed:  # a command that fails fast is no reference
        raise RuntimeError(f"commands exited non-zero: {failed}")
    return results
