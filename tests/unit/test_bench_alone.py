"""`make bench-cpu` measures each server with the other references stopped."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cpu_servers import Reference, alone


def stopped(pid: int, expected: bool = True) -> bool:
    """Whether the process is stopped (T in /proc), waiting up to 2 s for `expected`:
    a signal reaches a sleeping process a moment after it is sent."""
    deadline = time.monotonic() + 2
    while True:
        now = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [
        subprocess.Popen(["sleep", "60"]),
        subprocess.Popen(["sleep", "60"], start_new_session=True),
    ]
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_every_reference_but_the_measured_one_is_stopped_for_the_block(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    single, grouped = sleepers
    references = {
        "one": Reference("http://127.0.0.1:1/", single.pid),
        "group": Reference("http://127.0.0.1:2/", grouped.pid, group=True),
    }
    with alone(references["one"], references):
        assert stopped(grouped.pid) and not stopped(single.pid, expected=False)
    assert not stopped(grouped.pid, expected=False)
    with alone(None, references):  # gale measured: both references held
        assert stopped(single.pid) and stopped(grouped.pid)
    assert not stopped(single.pid, expected=False) and not stopped(grouped.pid, expected=False)


def test_the_references_go_on_when_the_measurement_fails(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    single, _ = sleepers
    references = {"one": Reference("http://127.0.0.1:1/", single.pid)}
    with pytest.raises(RuntimeError), alone(None, references):
        raise RuntimeError("the load failed")
    assert not stopped(single.pid, expected=False)
