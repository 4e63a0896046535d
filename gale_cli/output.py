"""The only module that imports rich: data goes to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from serving.spec import DeploymentSpec

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def is_interactive(no_input: bool = False) -> bool:
    """Whether a person can answer prompts: a terminal on stdin and no --no-input."""
    return not no_input and sys.stdin.isatty()


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
    from serving.spec import GROUPS, field_meta, fields

    profile = spec.profile
    low, high = replicas_per_hour_cost(spec)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for group, title in GROUPS.items():
        grid.add_row(Text(title, style="bold underline"), "")
        for field in fields(group=group):
            meta = field_meta(field)
            if meta.reviewed:
                grid.add_row(f"  {meta.label}", Text(review_value(spec, field)))
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


def review_value(spec: DeploymentSpec, field: str) -> str:
    """A spec field's value as the review shows it."""
    from serving.spec import field_meta

    value = getattr(spec, field)
    if field == "hardware":
        return f"{spec.profile.name} ({spec.profile.id})"
    if field == "stop":  # quoted: a stop sequence may be a space or a newline
        return ", ".join(repr(stop) for stop in value) or "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "—"
    unit = field_meta(field).unit
    if unit:
        return f"{value:g} {unit}"
    return str(value) if value != "" else "—"


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
