"""The only module that imports rich: data goes to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
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


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    *,
    optional: Sequence[str] = (),
) -> None:
    """A table of data on stdout. Words are never broken: while the table would not fit the
    terminal, the `optional` columns are left out, the least needed first (as kubectl does)."""
    stdout.print(_fitted(columns, rows, title, optional))


def _fitted(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None,
    optional: Sequence[str],
) -> Table:
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    shown = list(range(len(columns)))
    grid = _grid(columns, cells, shown, title)
    for name in optional:
        if _narrowest(grid) <= stdout.width:
            break
        shown.remove(columns.index(name))
        grid = _grid(columns, cells, shown, title)
    return grid


def _narrowest(grid: Table) -> int:
    """The table's width with every column at its minimum (measured unbounded: rich caps a
    measurement at the terminal's width)."""
    return stdout.measure(grid, options=stdout.options.update_width(10**6)).minimum


def _grid(
    columns: Sequence[str], cells: list[list[str]], shown: list[int], title: str | None
) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for index in shown:
        texts = [columns[index], *(row[index] for row in cells)]
        # Ids are what people copy, and a one-word column has nowhere to wrap: never cut them.
        no_wrap = index == 0 or all(len(text.split()) <= 1 for text in texts)
        pieces = texts if no_wrap else [word for text in texts for word in text.split()]
        # Rich squeezes columns below their longest word when pressed; a minimum stops it.
        widest = max((cell_len(piece) for piece in pieces), default=1)
        grid.add_column(columns[index], no_wrap=no_wrap, overflow="fold", min_width=widest)
    for row in cells:
        grid.add_row(*(row[index] for index in shown))
    return grid


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
    if value is None:  # an optional setting left unset, e.g. a per-key limit
        return "none"
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

    def update(self, text: str, key: str | None = None) -> None:
        """Show a new status line; without a terminal, only when `key` (default: the text)
        differs from the last one printed."""
        if self._status is not None:
            self._status.update(text)
            return
        key = text if key is None else key
        if key == self._last:
            return
        self._last = key
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


def watch(
    frames: Iterator[Any],
    render: Callable[[Any], tuple[Sequence[str], Iterable[Sequence[Any]]]],
    title: str | None = None,
    *,
    optional: Sequence[str] = (),
) -> None:
    """With --json, the first frame as one JSON document; otherwise each frame as a table
    (`render` gives its columns and rows, fitted as `table` fits them), redrawn in place
    until interrupted."""
    if _mode.json:
        print_json(next(frames))
        return
    from rich.live import Live

    with Live(console=stdout, auto_refresh=False) as live:
        for frame in frames:
            columns, rows = render(frame)
            live.update(_fitted(columns, rows, title, optional), refresh=True)


def lines(texts: Iterable[str]) -> None:
    """Lines of text on stdout as they come, unstyled (logs)."""
    for text in texts:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
