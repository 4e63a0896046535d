"""How long the last start of a deployment took, phase by phase; fail past a budget.

For a CI job after `gale deploy`: reads `gale describe NAME --json` (same cluster
address and token as every gale command) and prints each start-up phase.

    python examples/startup_report.py my-bot --budget 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the deployment")
    parser.add_argument("--budget", type=float, help="fail (exit 1) if the start took longer")
    args = parser.parse_args()
    described = subprocess.run(
        ["gale", "describe", args.name, "--json"], capture_output=True, text=True, check=False
    )
    if described.returncode != 0:
        sys.stderr.write(described.stderr)
        return described.returncode
    start = json.loads(described.stdout).get("last_start")
    if not start:
        print(f"{args.name}: no running replica has reported a start yet")
        return 1
    for phase in start["phases"]:
        print(f"{phase['phase']:<22}{phase['seconds']:>8.1f} s")
    print(f"{'total':<22}{start['total_s']:>8.1f} s")
    if args.budget is not None and start["total_s"] > args.budget:
        print(f"the start took {start['total_s']:.1f} s, over the budget of {args.budget:g} s")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
