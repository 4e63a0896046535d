"""gale logs' pure parts, and LogReader against a fake dashboard (httpx.MockTransport)."""

from __future__ import annotations

import time

import httpx
import pytest

from gale_cli.cluster import ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.errors import UsageError
from gale_cli.logs import LogReader, line_time, mask, merge, parse_since, replica_logs
from serving.keys import generate_key

TOKEN = "9" * 64
KEY = generate_key()[0]
APP = {
    "deployments": {
        "GaleModel": {
            "replicas": [
                {
                    "replica_id": "abc123",
                    "state": "RUNNING",
                    "node_id": "n1",
                    "log_file_path": "/serve/replica_smol_GaleModel_abc123.log",
                },
                {
                    "replica_id": "def456",
                    "state": "RUNNING",
                    "node_id": "n2",
                    "log_file_path": "/serve/replica_smol_GaleModel_def456.log",
                },
                {"replica_id": "ghi789", "state": "STARTING"},  # not placed: no log yet
            ]
        }
    }
}
LOGS = {
    "serve/replica_smol_GaleModel_abc123.log": (
        "INFO 2026-01-02 10:00:01,000 smol_GaleModel abc123 -- gale: loading\n"
        f"INFO 2026-01-02 10:00:03,500 smol_GaleModel abc123 -- saw {KEY} and {TOKEN}\n"
        "Traceback (most recent call last):\n"
    ),
    "serve/replica_smol_GaleModel_def456.log": (
        "INFO 2026-01-02 10:00:02,000 smol_GaleModel def456 -- gale: loading\n"
    ),
}


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), (" 2h ", 7200), ("1d", 86400)]
)
def test_since_takes_a_duration(text: str, seconds: int) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "-5m", "1w", ""])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_since(text)


def test_mask_hides_keys_whole_or_cut_and_the_token() -> None:
    line = f"a {KEY} b {KEY[:12]} c {TOKEN} d gale-x"
    assert mask(line, TOKEN) == "a gale-*** b gale-*** c *** d gale-x"


def test_merge_orders_by_time_and_keeps_a_traceback_with_its_line() -> None:
    merged = merge(LOGS.values())
    assert [line.split(" -- ")[-1][:12] for line in merged] == [
        "gale: loadin",
        "gale: loadin",
        f"saw {KEY}"[:12],
        "Traceback (m",
    ]
    assert "def456" in merged[1]
    assert line_time(merged[0]) == time.mktime((2026, 1, 2, 10, 0, 1, 0, 0, -1))
    later = line_time(merged[1])
    assert later is not None and len(merge(LOGS.values(), since=later)) == 3


def test_replica_logs_by_id_prefix() -> None:
    assert [log.filename for log in replica_logs(APP, "def")] == [
        "serve/replica_smol_GaleModel_def456.log"
    ]
    assert len(replica_logs(APP)) == 2


def dashboard(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return httpx.Response(401)  # as Ray's dashboard answers gale's probe without the token
    if request.url.path == "/api/serve/applications/":
        return httpx.Response(200, json={"applications": {"smol": APP}})
    if request.url.path == "/api/v0/logs/file":
        assert request.url.params["lines"] == "50"
        return httpx.Response(200, text=LOGS[request.url.params["filename"]])
    return httpx.Response(404)


def test_reader_prints_no_key_and_no_token() -> None:
    config = ClusterConfig("http://head:8265", token=TOKEN, token_source="test")
    with ServeClient(config, transport=httpx.MockTransport(dashboard)) as client:
        reader = LogReader(client)
        lines = reader.lines(reader.replicas("smol"), 50, None)
        assert len(lines) == 4
        assert "saw gale-*** and ***" in lines[2]
        assert all(KEY not in line and TOKEN not in line for line in lines)
        with pytest.raises(UsageError, match="abc123, def456"):
            reader.replicas("smol", "zzz")
        with pytest.raises(UsageError, match="other"):
            reader.replicas("other")
