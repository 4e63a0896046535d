"""Which cores a local head's own processes keep to, and how a replica takes back the rest."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from serving import cores


def test_ray_keeps_to_the_last_core_and_to_none_with_one() -> None:
    assert cores.control_core({0, 1}) == 1
    assert cores.control_core([3, 0, 7, 5]) == 7
    assert cores.control_core({0}) is None
    assert cores.control_core(set()) is None


def test_core_lists_read_back_and_anything_else_names_none() -> None:
    assert cores.parse_cores(cores.format_cores({3, 0, 1})) == {0, 1, 3}
    assert cores.format_cores({2, 0}) == "0,2"
    assert cores.parse_cores("") == set()
    assert cores.parse_cores("0-3") == set()


def test_without_the_variable_a_replica_keeps_its_cores() -> None:
    before = os.sched_getaffinity(0)
    assert cores.take_engine_cores({}) == set()
    assert cores.take_engine_cores({cores.ENGINE_CORES_ENV: "junk"}) == set()
    assert os.sched_getaffinity(0) == before


def test_what_starts_in_the_block_keeps_to_the_core_and_the_thread_gets_its_cores_back() -> None:
    machine = cores.caller_cores()
    if len(machine) < 2:
        pytest.skip("one core: nothing to set apart")
    last = cores.control_core(machine)
    with cores.kept_to(last):
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert child.stdout.strip() == f"[{last}]"
    assert os.sched_getaffinity(0) == machine
    with cores.kept_to(None):
        assert os.sched_getaffinity(0) == machine


TAKES_BACK = """
import os, threading
from serving import cores
os.sched_setaffinity(0, {LAST})
started = threading.Event(); done = threading.Event()
def wait():
    started.set(); done.wait()
thread = threading.Thread(target=wait); thread.start(); started.wait()
taken = cores.take_engine_cores({cores.ENGINE_CORES_ENV: "ALL"})
threads = [os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")]
later = []
child = threading.Thread(target=lambda: later.append(os.sched_getaffinity(0))); child.start()
child.join(); done.set(); thread.join()
print(sorted(taken), all(t == taken for t in threads), later[0] == taken)
"""


def test_a_replica_takes_every_core_for_each_thread_and_those_it_starts() -> None:
    machine = cores.caller_cores()
    if len(machine) < 2:
        pytest.skip("one core: nothing to set apart")
    last = cores.control_core(machine)
    script = TAKES_BACK.replace("LAST", str(last)).replace("ALL", cores.format_cores(machine))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"{sorted(machine)} True True"
