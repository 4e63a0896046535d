"""Start-up phases: what a replica writes, and what the CLI makes of it through a fake dashboard."""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import logging.handlers
from pathlib import Path
from typing import Any

import httpx
import pytest

from gale_cli.cluster import ServeClient
from gale_cli.commands.waiting import describe_progress
from gale_cli.connection import ClusterConfig
from gale_cli.progress import Progress
from gale_cli.startup import WAITING, ReplicaStart, StartupReader, describe, replica_start
from serving import startup
from serving.spec import DeploymentSpec
from serving.startup import Event, Reporter, durations, parse, phase_file


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_each_report_is_one_flushed_json_line_the_reader_parses() -> None:
    sink, clock = io.StringIO(), Clock()
    reporter = Reporter(sink, clock=clock)
    reporter.report(startup.LOADING, model="m")
    clock.now += 12.5
    reporter.report(startup.WARMING_UP)
    clock.now += 0.5
    reporter.report(startup.READY)
    events = parse(sink.getvalue() + "not json\n{}\n")
    assert [(e.phase, e.at) for e in events] == [
        ("loading", 1000.0),
        ("warming up", 1012.5),
        ("ready", 1013.0),
    ]
    assert events[0].detail == {"model": "m"}
    assert durations(events) == [("loading", 12.5), ("warming up", 0.5), ("ready", 0.0)]
    with pytest.raises(ValueError, match="unknown start-up phase"):
        reporter.report("napping")


def test_download_progress_from_a_fake_source_is_rate_limited_then_loading_follows() -> None:
    """The hook a downloader calls: (bytes done, bytes total), many times a second."""
    sink, clock = io.StringIO(), Clock()
    reporter = Reporter(sink, clock=clock, progress_every=1.0)
    startup.begin(reporter)
    try:
        callback = startup.progress_callback()
        total = 4_000_000
        for step in range(41):  # 100 kB every 0.1 s: 40 calls in 4 s
            callback(step * 100_000, total)
            clock.now += 0.1
    finally:
        startup.begin(Reporter())
    events = parse(sink.getvalue())
    downloading = [e for e in events if e.phase == startup.DOWNLOADING]
    # One line a second (and the last at completion), not one per call.
    assert 4 <= len(downloading) <= 6
    last = downloading[-1].detail
    assert last["bytes_done"] == last["bytes_total"] == total
    assert last["bytes_per_s"] == pytest.approx(1_000_000, rel=0.05)
    assert events[-1].phase == startup.LOADING
    assert reporter.phase == startup.LOADING


def test_a_failure_names_the_phase_it_happened_in() -> None:
    sink = io.StringIO()
    reporter = Reporter(sink, clock=Clock())
    reporter.report(startup.LOADING)
    assert reporter.failed(OSError("no weights here")) == "loading"
    [_, failed] = parse(sink.getvalue())
    assert failed.phase == "failed"
    assert failed.detail == {"failed_phase": "loading", "error": "OSError: no weights here"}


def test_the_phase_file_sits_beside_the_serve_log_behind_its_memory_handler(
    tmp_path: Path,
) -> None:
    log = tmp_path / "replica_chat_GaleModel_abc123.log"
    target = logging.FileHandler(log)
    buffered = logging.handlers.MemoryHandler(100, target=target)
    try:
        handle = startup.open_beside([logging.NullHandler(), buffered])
        assert handle is not None
        Reporter(handle).report(startup.LOADING)
        handle.close()
    finally:
        target.close()
    written = tmp_path / "replica_chat_GaleModel_abc123.startup.jsonl"
    assert str(written) == phase_file(str(log))
    assert [e.phase for e in parse(written.read_text())] == ["loading"]
    assert startup.open_beside([logging.NullHandler()]) is None


@pytest.mark.parametrize(
    ("row", "events", "expected"),
    [
        ({"replica_id": "r1", "start_time_s": 5.0}, None, (WAITING, 5.0)),
        (
            {"replica_id": "r1", "node_id": "n", "log_file_path": "/serve/x.log"},
            None,
            ("starting", None),
        ),
        (
            {"replica_id": "r1", "node_id": "n", "log_file_path": "/serve/x.log"},
            [Event("loading", 7.0)],
            ("loading", 7.0),
        ),
    ],
)
def test_a_replicas_phase_from_its_row_and_events(
    row: dict[str, Any], events: list[Event] | None, expected: tuple[str, float | None]
) -> None:
    start = replica_start(row, events, "needs 1 × H100 per replica; the cluster has 0")
    assert (start.phase, start.since) == expected


def test_phase_wording() -> None:
    downloading = ReplicaStart(
        "abcdef123456",
        "downloading",
        100.0,
        {"bytes_done": 1_200_000_000, "bytes_total": 3_400_000_000, "bytes_per_s": 56_000_000},
    )
    assert describe(downloading, 120.0) == (
        "replica abcdef12: downloading 1.2 GB of 3.4 GB at 56.0 MB/s, 20s"
    )
    assert describe(ReplicaStart("r", "loading", 0.0), 75.0) == "replica r: loading, 1m15s"
    spec = DeploymentSpec(name="chat", model="smollm2-135m-instruct", hardware="cpu")
    progress = Progress(
        "DEPLOYING", replicas={"STARTING": 1}, starting=(ReplicaStart("r", "loading", 0.0),)
    )
    assert describe_progress(spec, progress, 3.0) == (
        "Deploying: 0 replica(s) running (min 1, max 1); 1 starting — replica r: loading, 3s"
    )
    waiting = Progress(
        "DEPLOYING",
        replicas={"STARTING": 1},
        waiting_for_hardware="needs 1 × H100 per replica; the cluster has 0",
        starting=(ReplicaStart("r", WAITING, 10.0),),
    )
    assert describe_progress(spec, waiting, 40.0) == (
        "Waiting for hardware: needs 1 × H100 per replica; the cluster has 0 (for 30s)"
    )


# -- the reader, through a fake dashboard ------------------------------------------------

LOG = "/serve/replica_chat_GaleModel_r1.log"


class Dashboard:
    """Serve's applications, node listing and log files, as the dashboard answers them."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, query = request.url.path, request.url.params
        if path == "/api/v0/logs/file":
            name = query["filename"]
            if name not in self.files:
                return httpx.Response(500, text=f"{name} not found")
            lines = self.files[name].splitlines()[-int(query["lines"]) :]
            return httpx.Response(200, text="\n".join(lines) + "\n")
        if path == "/api/v0/logs":
            # pathlib's glob, as Ray's log agent lists files: `*` stays within a folder.
            pattern = query["glob"].split("/")
            found = [
                name
                for name in self.files
                if len(name.split("/")) == len(pattern)
                and all(map(fnmatch.fnmatch, name.split("/"), pattern))
            ]
            return httpx.Response(200, json={"data": {"result": {"internal": found}}})
        if path == "/api/v0/nodes":
            row = {"node_id": "n1", "state": "ALIVE", "resources_total": {"CPU": 8.0}}
            return httpx.Response(200, json={"data": {"result": {"result": [row]}}})
        return httpx.Response(404)


def reader_for(dashboard: Dashboard, clock: Clock | None = None) -> StartupReader:
    config = ClusterConfig(
        dashboard_url="http://127.0.0.1:8265", gale_home=Path("/nonexistent"), token="tok"
    )
    client = ServeClient(config, transport=httpx.MockTransport(dashboard))
    return StartupReader(client, clock or Clock())


def app_with(*rows: dict[str, Any], status: str = "DEPLOYING") -> dict[str, Any]:
    deployment = {"status": "UPDATING", "target_num_replicas": 1, "replicas": list(rows)}
    return {"status": status, "deployments": {"GaleModel": deployment}}


def lines(*events: Event) -> str:
    return "".join(event.line() + "\n" for event in events)


def test_the_reader_shows_each_starting_replicas_phase() -> None:
    files = {"serve/replica_chat_GaleModel_r1.startup.jsonl": lines(Event("loading", 100.0))}
    reader = reader_for(Dashboard(files))
    app = app_with(
        {"replica_id": "r1", "state": "STARTING", "node_id": "n1", "log_file_path": LOG},
        {"replica_id": "r2", "state": "STARTING", "node_id": "n1", "log_file_path": LOG + "2"},
        {"replica_id": "r3", "state": "RUNNING", "node_id": "n1", "log_file_path": LOG},
    )
    progress = reader.progress(app)
    assert [(s.replica_id, s.phase) for s in progress.starting] == [
        ("r1", "loading"),
        ("r2", "starting"),
    ]


def test_a_failed_start_names_its_phase_error_and_the_replicas_last_lines() -> None:
    failed = Event("failed", 120.0, {"failed_phase": "loading", "error": "ModelLoadError: no"})
    log_lines = [f"INFO line {i}" for i in range(30)] + ["ERROR gale-abcdefghij0123456789 boom"]
    files = {
        "serve/replica_chat_GaleModel_r1.startup.jsonl": lines(Event("loading", 100.0), failed),
        "serve/replica_chat_GaleModel_r1.log": "\n".join(log_lines),
    }
    # Not seen starting (another command deployed it): found by listing the node's files.
    reader = reader_for(Dashboard(files))
    # A failure before this revision was deployed belongs to an earlier one.
    assert reader.failure("chat", since=130.0) is None
    failure = reader.failure("chat", since=110.0)
    assert failure is not None
    assert (failure.replica_id, failure.phase, failure.error) == (
        "r1",
        "loading",
        "ModelLoadError: no",
    )
    assert len(failure.log) == 12 and failure.log[-1] == "ERROR gale-*** boom"
    text = failure.text("chat")
    assert text.startswith("'chat' failed while loading: ModelLoadError: no")
    assert "Last lines of replica r1's log:" in text


def test_the_last_start_phase_by_phase() -> None:
    files = {
        "serve/replica_chat_GaleModel_r1.startup.jsonl": lines(
            Event("loading", 104.0), Event("warming up", 116.0), Event("ready", 116.5)
        )
    }
    row = {
        "replica_id": "r1",
        "state": "RUNNING",
        "node_id": "n1",
        "log_file_path": LOG,
        "start_time_s": 100.0,
    }
    start = reader_for(Dashboard(files)).last_start(app_with(row, status="RUNNING"))
    assert start is not None
    assert start["total_s"] == 16.5
    assert start["phases"] == [
        {"phase": "starting", "seconds": 4.0},
        {"phase": "loading", "seconds": 12.0},
        {"phase": "warming up", "seconds": 0.5},
    ]
    assert json.dumps(start)
