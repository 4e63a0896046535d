"""`python -m bench [--quick] [--only SECTION,...]`: writes docs/benchmarks.{json,md,png}.

With `--only`, just those sections run (on a fresh head, after `gale deploy`) and
replace theirs in the published results, which then name them as run again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import report, suite


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write the results beside the docs."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter loads, fewer runs")
    parser.add_argument("--engine", default="auto", help="auto, transformers or vllm")
    parser.add_argument("--out", type=Path, default=report.DOCS, help="folder for the results")
    parser.add_argument("--only", help="comma-separated sections to run again, e.g. replica_killed")
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(",")) if args.only else None
    unknown = sorted((only or frozenset()) - set(suite.SECTIONS))
    if unknown:
        # Refused before anything runs: a misspelt name would otherwise run nothing and
        # drop that section from the published results.
        parser.error(
            f"--only names no section {', '.join(unknown)}; the sections are "
            + ", ".join(suite.SECTIONS)
        )
    results = suite.run(quick=args.quick, engine=args.engine, only=only)
    if only is not None:
        published = json.loads((args.out / "benchmarks.json").read_text())
        results = report.merge_rerun(published, results, only)
    rows = report.figures(results)
    results["figures"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    drawn = report.plot(results, args.out / "benchmarks.png")
    text = report.markdown(results, rows, "benchmarks.png" if drawn else None)
    (args.out / "benchmarks.md").write_text(text)
    print(text)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
