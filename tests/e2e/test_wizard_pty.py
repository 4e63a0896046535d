"""`gale deploy` typed into a real pseudo-terminal, as a person would use it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import catalog

pexpect = pytest.importorskip("pexpect")

GALE = Path(sys.executable).parent / "gale"
DOWN = "\x1b[B"
ENTER = "\r"
CLEAR = "\x15"  # Ctrl-U: erase the pre-filled answer
CTRL_C = "\x03"
TIMEOUT = 30

REVIEW_MENU = [
    "Deploy",
    "Edit model",
    "Edit general details",
    "Edit parameters",
    "Edit hardware",
    "Cancel",
]
PARAMETERS = [
    "Temperature",
    "Maximum length",
    "Top p",
    "Top k",
    "Stop sequences",
    "Inference batch size",
    "Min replicas",
    "Max replicas",
    "Scale-up delay",
    "Scale-down delay",
]
ALL_FLAGS = [
    *("--model", "smollm2-135m-instruct", "--name", "flagged", "--hardware", "cpu"),
    *("--description", "d", "--tag", "t", "--temperature", "0.5", "--max-length", "64"),
    *("--top-p", "0.9", "--top-k", "10", "--stop", "###", "--batch-size", "2"),
    *("--min-replicas", "1", "--max-replicas", "2"),
    *("--scale-up-delay", "5", "--scale-down-delay", "60"),
]


class Terminal:
    """A `gale` process on a pty, with the keys a person presses."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLUMNS": "250",
            "LINES": "60",
            "NO_COLOR": "1",
            "GALE_HOME": str(home),
            # pexpect is no terminal emulator: it never answers prompt_toolkit's cursor-position
            # request, which would cost a one-second wait at every question.
            "PROMPT_TOOLKIT_NO_CPR": "1",
        }
        self.child = pexpect.spawn(
            str(GALE),
            args,
            env=env,
            dimensions=(60, 250),
            encoding="utf-8",
            timeout=TIMEOUT,
        )
        self.transcript: list[str] = []

    def wait(self, text: str) -> None:
        """Wait until `text` appears (literally) on the screen."""
        self.child.expect_exact(text)
        self.transcript.append(self.child.before + self.child.after)

    def answer(self, question: str, keys: str) -> None:
        """Wait for a question, then press keys."""
        self.wait(question)
        self.child.send(keys)

    def type(self, question: str, text: str) -> None:
        """Replace a text answer (pre-filled or not) and press Enter."""
        self.answer(question, CLEAR + text + ENTER)

    def choose(self, question: str, index: int) -> None:
        """Move down `index` entries from the first and press Enter."""
        self.answer(question, DOWN * index + ENTER)

    def finish(self) -> tuple[int, str]:
        """Wait for the process to end; its exit status and what it printed after the last wait."""
        self.child.expect(pexpect.EOF)
        rest = self.child.before
        self.child.close()
        return self.child.exitstatus, rest


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Any]:
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        term = Terminal(["deploy", *args], tmp_path / "gale-home")
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        if term.child.isalive():
            term.child.terminate(force=True)


def first_json_object(text: str) -> dict[str, Any]:
    """The JSON object printed after the last prompt (the terminal turns newlines into CRLF)."""
    obj, _ = json.JSONDecoder().raw_decode(text[text.index("{") :])
    return obj


def test_a_person_deploys_with_the_wizard(terminal: Any) -> None:
    t = terminal("--dry-run")
    t.choose("Model", list(catalog.models()).index("smollm2-135m-instruct"))

    t.type("Deployment name", "my-bot")
    t.type("Description", "first draft")
    t.type("Tags (comma-separated)", "chat, demo")
    t.choose("General details: Next or Back?", 0)

    t.type("Temperature", "0.3")
    for label in PARAMETERS[1:7]:
        t.answer(label, ENTER)
    t.type("Max replicas", "3")
    t.answer("Scale-up delay", ENTER)
    t.answer("Scale-down delay", ENTER)
    t.choose("Parameters: Next or Back?", 1)  # Back

    t.answer("Deployment name", ENTER)  # my-bot is kept
    t.type("Description", "Short helper bot")
    t.answer("Tags (comma-separated)", ENTER)
    t.choose("General details: Next or Back?", 0)

    t.answer("Temperature", ENTER)  # 0.3 is kept
    t.answer("Maximum length", ENTER)
    t.type("Top p", "0")
    t.wait("Input should be greater than 0")
    t.child.send(CLEAR + "0.9" + ENTER)
    for label in PARAMETERS[3:]:
        t.answer(label, ENTER)
    t.choose("Parameters: Next or Back?", 0)

    t.choose("Hardware", list(catalog.hardware()).index("cpu"))
    t.choose("Hardware: Next or Back?", 0)

    t.wait("fits:")  # the review shows the fit verdict
    t.choose("Review", REVIEW_MENU.index("Edit parameters"))
    t.type("Temperature", "1.2")
    for label in PARAMETERS[1:]:
        t.answer(label, ENTER)
    t.choose("Review", REVIEW_MENU.index("Deploy"))
    t.answer("I accept all the terms and conditions", "y")

    status, printed = t.finish()
    assert status == 0, printed
    assert "dry run: nothing was deployed" in printed
    app = first_json_object(printed)  # the Serve application: the spec's every field is in it
    settings = app["deployments"][0]["user_config"]
    assert (settings["name"], settings["description"], settings["tags"]) == (
        "my-bot",
        "Short helper bot",
        ["chat", "demo"],
    )
    parameters = settings["parameters"]
    assert (parameters["temperature"], parameters["top_p"]) == (1.2, 0.9)
    assert (app["args"]["model"], app["args"]["hardware"]) == ("smollm2-135m-instruct", "cpu")
    assert app["route_prefix"] == "/my-bot"
    scaling = app["deployments"][0]["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 3)


def test_ctrl_c_exits_130(terminal: Any) -> None:
    t = terminal("--dry-run", "--model", "smollm2-135m-instruct")
    t.answer("Deployment name", "half-typ" + CTRL_C)
    status, printed = t.finish()
    assert status == 130, printed


def test_declining_the_terms_then_cancelling_deploys_nothing(terminal: Any) -> None:
    # Every answer given as a flag: the wizard goes straight to the review.
    t = terminal("--dry-run", *ALL_FLAGS)
    t.choose("Review", REVIEW_MENU.index("Deploy"))
    t.answer("I accept all the terms and conditions", "n")
    t.choose("Review", REVIEW_MENU.index("Cancel"))
    status, printed = t.finish()
    assert status == 1  # cancelled: the operation did not happen
    assert "cancelled: nothing was deployed" in printed
    assert "route_prefix" not in printed


def test_json_at_a_terminal_never_prompts(terminal: Any) -> None:
    # --json is for scripts, even at a terminal: a missing answer names its flag.
    t = terminal("--dry-run", "--json", "--model", "smollm2-135m-instruct")
    status, printed = t.finish()
    assert status == 2, printed
    assert "pass --name" in printed and "pass --hardware" in printed
    assert "Deployment name" not in printed
