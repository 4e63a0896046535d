"""The test and benchmark stack's own logic: polling to a deadline, the throwaway GALE_HOME."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from devstack import CLEARED, eventually, eventually_async, throwaway_home


def test_eventually_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", {"ready": True}])
    assert eventually(lambda: next(answers), 5, "ready", interval=0) == {"ready": True}


def test_eventually_names_what_did_not_happen_in_time() -> None:
    calls = itertools.count()
    with pytest.raises(TimeoutError, match=r"the replica RUNNING: not within 0.05s"):
        eventually(lambda: next(calls) < 0, 0.05, "the replica RUNNING", interval=0.01)


def test_eventually_async_waits_without_blocking_the_loop() -> None:
    async def scenario() -> int:
        done: list[int] = []

        async def later() -> None:
            await asyncio.sleep(0.02)
            done.append(1)

        task = asyncio.create_task(later())
        # The flag is set by another task on the same loop: a blocking wait would never see it.
        value = await eventually_async(lambda: len(done), 5, "the other task", interval=0.005)
        await task
        return value

    assert asyncio.run(scenario()) == 1
    with pytest.raises(TimeoutError, match="never: not within"):
        asyncio.run(eventually_async(lambda: False, 0.02, "never", interval=0.005))


def test_throwaway_home_is_fresh_private_and_gone_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GALE_HOME", "/somewhere/else")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-for-tests")
    with throwaway_home("gale-unit-") as home:
        assert os.environ["GALE_HOME"] == str(home) and home.is_dir()
        assert not any(name in os.environ for name in CLEARED)
    assert not Path(home).exists()
    assert os.environ["GALE_HOME"] == "/somewhere/else"
    assert os.environ["RAY_AUTH_TOKEN"] == "not-for-tests"
