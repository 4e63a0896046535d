"""The client examples run against a real deployment and get a real answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Deployed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.cluster


def example_env(bundled_model: Deployed) -> dict[str, str]:
    return {
        **os.environ,
        "GALE_ENDPOINT": bundled_model.base_url,
        "GALE_API_KEY": bundled_model.key,
    }


def test_openai_example_streams_the_answer(bundled_model: Deployed) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "openai_chat.py"), "Which city is the capital of France?"],
        env=example_env(bundled_model),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert bundled_model.key not in done.stdout + done.stderr


def test_curl_example_gets_a_chat_completion(bundled_model: Deployed) -> None:
    done = subprocess.run(
        ["bash", str(EXAMPLES / "curl_chat.sh"), "Which city is the capital of France?"],
        env=example_env(bundled_model),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["object"] == "chat.completion"
    assert "Paris" in reply["choices"][0]["message"]["content"]


def test_structured_output_example_parses_the_answer(bundled_model: Deployed) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "structured_output.py"),
            "Which city is the capital of France?",
        ],
        env=example_env(bundled_model),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"city", "country"} and all(isinstance(v, str) for v in answer.values())


def test_tool_call_example_runs_a_tool_loop(bundled_model: Deployed) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "tool_call.py"), "What is the weather in Paris?"],
        env=example_env(bundled_model),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert lines["call"].startswith("get_weather(")
    arguments = json.loads(lines["call"].removeprefix("get_weather(").removesuffix(")"))
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
    assert json.loads(lines["result"])["temperature"] in (21, 70)
    assert "answer" in lines


def test_startup_report_example_prints_the_last_start(bundled_model: Deployed) -> None:
    def report(*budget: str) -> subprocess.CompletedProcess[str]:
        gale_bin = str(Path(sys.executable).parent)
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "startup_report.py"), bundled_model.name, *budget],
            env={**os.environ, "PATH": gale_bin + os.pathsep + os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = report("--budget", "86400")
    assert done.returncode == 0, done.stdout + done.stderr
    phases = [line.split()[0] for line in done.stdout.splitlines()]
    assert "loading" in phases and phases[-1] == "total"
    # A budget no start can meet fails the job, saying by how much.
    over = report("--budget", "0.001")
    assert over.returncode == 1
    assert "over the budget of 0.001 s" in over.stdout


def test_responses_example_streams_the_answer(bundled_model: Deployed) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "responses_stream.py"),
            "Which city is the capital of France?",
        ],
        env=example_env(bundled_model),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "status: " in done.stdout
    assert bundled_model.key not in done.stdout + done.stderr
