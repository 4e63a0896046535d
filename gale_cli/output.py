"""The only module that imports rich: data goes to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from serving.spec import DeploymentSpec

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


@dataclass
class _Mode:
    json: bool = False


_mode = _Mode()


def set_json(on: bool) -> bool:
    """Choose the output mode for the run: JSON data for scripts (--json), or text for a person."""
    _mode.json = on
    return on


def is_interactive(no_input: bool = False) -> bool:
    """Whether a person can answer prompts: a terminal on stdin, no --no-input and no --json."""
    return not no_input and not _mode.json and sys.stdin.isatty()


def result(
    data: Any, human: str | Callable[[], object] | None = None, *, style: str | None = None
) -> None:
    """A command's result: `data` as JSON on stdout with --json; otherwise `human`, a message
    (on stderr) or a function that shows the data to a person."""
    if _mode.json:
        print_json(data)
    elif callable(human):
        human()
    elif human is not None:
        message(human, style=style)


def unless_json(show: Callable[[], object]) -> None:
    """Show something only to a person: with --json, the result's data carries it instead."""
    if not _mode.json:
        show()


def print_json(data: Any) -> None:
    """Write one JSON document to stdout, unstyled, for scripts and CI."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def message(text: str, *, style: str | None = None) -> None:
    """A message for the person, on stderr."""
    stderr.print(text, style=style, markup=False, highlight=False)


def error(text: str, hint: str | None = None) -> None:
    """An error on stderr, with an optional hint on how to fix it."""
    stderr.print(Text("error: ", style="bold red") + Text(text))
    if hint:
        stderr.print(Text("hint: ", style="bold") + Text(hint))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table of data on stdout."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        # Ids are what people copy: never cut or wrap them.
        grid.add_column(column, no_wrap=index == 0, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout.print(grid)


def render_review(spec: DeploymentSpec) -> Group:
    """The review step: every field, the fit verdict and the cost."""
    from serving.fit import check_fit
    from serving.serve_config import replicas_per_hour_cost

    profile = spec.profile
    low, high = replicas_per_hour_cost(spec)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    sections: list[tuple[str, list[tuple[str, Any]]]] = [
        ("Model", [("Model", spec.model)]),
        (
            "General details",
            [
                ("Deployment name", spec.name),
                ("Description", spec.description or "—"),
                ("Tags", ", ".join(spec.tags) or "—"),
            ],
        ),
        (
            "Parameters",
            [
                ("Temperature", spec.temperature),
                ("Maximum length", spec.max_length),
                ("Top p", spec.top_p),
                ("Top k", spec.top_k),
                ("Stop sequences", ", ".join(repr(s) for s in spec.stop) or "—"),
                ("Inference batch size", spec.batch_size),
                ("Min replicas", spec.min_replicas),
                ("Max replicas", spec.max_replicas),
                ("Scale-up delay", f"{spec.scale_up_delay:g} s"),
                ("Scale-down delay", f"{spec.scale_down_delay:g} s"),
            ],
        ),
        (
            "Hardware",
            [("Hardware", f"{profile.name} ({profile.id})"), ("Engine", spec.engine)],
        ),
    ]
    for title, rows in sections:
        grid.add_row(Text(title, style="bold underline"), "")
        for label, value in rows:
            grid.add_row(f"  {label}", Text(str(value)))
    verdict = check_fit(spec)
    fit_style = {True: "green", False: "bold red", None: "yellow"}[verdict.fits]
    grid.add_row(Text("Fit", style="bold underline"), Text(verdict.message, style=fit_style))
    grid.add_row(
        Text("Cost", style="bold underline"),
        Text(
            f"{profile.price_per_hour:g} per replica-hour: {low:g}/h at min replicas, "
            f"{high:g}/h at max replicas"
        ),
    )
    return Group(Text("Review", style="bold"), grid)


def show(renderable: Any) -> None:
    """Print a rich renderable for the person, on stderr."""
    stderr.print(renderable)


class Spinner:
    """A one-line live status on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, text: str) -> None:
        self._live = stderr.is_terminal
        self._status = stderr.status(text) if self._live else None
        self._last = ""
        if not self._live:
            self.update(text)

    def update(self, text: str) -> None:
        """Show a new status line."""
        if text == self._last:
            return
        self._last = text
        if self._status is not None:
            self._status.update(text)
        else:
            message(text)

    def __enter__(self) -> Spinner:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()


def render_description(spec: DeploymentSpec) -> Group:
    """`gale describe`'s view of a spec: the review's sections, headed by what they describe."""
    _review_title, *sections = render_review(spec).renderables
    return Group(Text(f"Configuration of '{spec.name}'", style="bold"), *sections)
