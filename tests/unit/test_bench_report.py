"""Publishing a section run again on its own (`python -m bench --only`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import report, suite
from bench.__main__ import main as bench_main

PUBLISHED = {
    "started": "2026-11-30 10:00:00 UTC",
    "quick": False,
    "engine": "auto",
    "model": "m",
    "machine": {"cpu_model": "cpu", "cores": 2, "memory_gb": 24, "load_average": [1, 1, 1]},
    "sections": {
        "deploy": {"result": {"deploy_s": 20}},
        "replica_killed": {"result": {"failed": 5, "replacement_running_s": 30}},
        "scaling": {"result": {"up_s": 9}},
    },
    "errors": {"scaling": "TimeoutError"},
}


def test_a_rerun_replaces_only_its_sections_and_is_named_with_its_date() -> None:
    rerun = {
        "started": "2026-12-02 17:30:00 UTC",
        "sections": {
            "deploy": {"result": {"deploy_s": 18}},
            "replica_killed": {"result": {"failed": 0, "replacement_running_s": 28}},
        },
        "errors": {},
    }
    merged = report.merge_rerun(PUBLISHED, rerun, frozenset({"replica_killed"}))
    assert merged["sections"]["replica_killed"]["result"]["failed"] == 0
    assert merged["sections"]["deploy"] == PUBLISHED["sections"]["deploy"]
    assert merged["errors"] == {"scaling": "TimeoutError"}
    assert merged["reruns"] == {"replica_killed": "2026-12-02 17:30:00 UTC"}
    assert PUBLISHED["sections"]["replica_killed"]["result"]["failed"] == 5  # not changed
    text = report.markdown(merged, [], None)
    assert "`replica_killed` on 2026-12-02 17:30:00 UTC" in text
    assert "`replica_killed`" not in report.markdown(PUBLISHED, [], None)


def test_a_rerun_that_failed_records_its_error_instead_of_the_old_figure() -> None:
    rerun = {"started": "2026-12-02", "sections": {}, "errors": {"replica_killed": "boom"}}
    merged = report.merge_rerun(PUBLISHED, rerun, frozenset({"replica_killed"}))
    assert "replica_killed" not in merged["sections"]
    assert merged["errors"]["replica_killed"] == "boom"


def test_only_a_section_the_suite_has_can_be_run_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def must_not_run(**_: object) -> None:
        raise AssertionError("the suite ran for a misspelt section")

    monkeypatch.setattr(suite, "run", must_not_run)
    published = tmp_path / "benchmarks.json"
    published.write_text("{}")
    with pytest.raises(SystemExit) as exited:
        bench_main(["--only", "replica_killed,replica_kiled", "--out", str(tmp_path)])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--only names no section replica_kiled" in error and "replica_killed" in error
    assert published.read_text() == "{}"  # nothing written


def test_every_section_the_suite_runs_is_one_only_accepts() -> None:
    source = Path(suite.__file__).read_text()
    used = set(re.findall(r'section\(\s*"([a-z_0-9]+)"', source))
    assert used == set(suite.SECTIONS)
