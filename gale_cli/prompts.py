"""The only module that imports questionary: a small prompting interface the wizard talks to."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Validator = Callable[[str], "str | None"]


class Prompter(Protocol):
    """What the wizard needs from a terminal; tests pass a scripted fake."""

    def text(self, message: str, default: str = "", validate: Validator | None = None) -> str:
        """Ask for text; `validate` gives None when fine, else a reason, and it is re-asked."""
        ...

    def select(self, message: str, choices: Sequence[tuple[str, T]], default: T | None = None) -> T:
        """Ask for one of `choices` (title, value); return the chosen value."""
        ...

    def confirm(self, message: str, default: bool = False) -> bool:
        """Ask a yes/no question."""
        ...

    def note(self, renderable: Any) -> None:
        """Show something to the person (a line of text or a rich renderable)."""
        ...


class QuestionaryPrompter:
    """A Prompter on a real terminal. Prompts go to stderr, so stdout stays for data (--json).

    `unsafe_ask()` lets Ctrl-C raise KeyboardInterrupt, which the CLI turns into exit 130.
    """

    def _output(self) -> Any:
        from prompt_toolkit.output import create_output

        return create_output(stdout=sys.stderr)

    def text(self, message: str, default: str = "", validate: Validator | None = None) -> str:
        """Ask for text, re-asking in place while `validate` gives a reason."""
        import questionary

        def check(answer: str) -> bool | str:
            reason = validate(answer) if validate else None
            return True if reason is None else reason

        question = questionary.text(message, default=default, validate=check, output=self._output())
        return str(question.unsafe_ask())

    def select(self, message: str, choices: Sequence[tuple[str, T]], default: T | None = None) -> T:
        """Choose with the arrow keys and Enter."""
        import questionary

        # Index values: questionary compares and may stringify values; indices are always safe.
        options = [questionary.Choice(title, value=i) for i, (title, _) in enumerate(choices)]
        start = next((options[i] for i, (_, value) in enumerate(choices) if value == default), None)
        question = questionary.select(
            message, choices=options, default=start, output=self._output()
        )
        return choices[question.unsafe_ask()][1]

    def confirm(self, message: str, default: bool = False) -> bool:
        """A y/N question."""
        import questionary

        question = questionary.confirm(message, default=default, output=self._output())
        return bool(question.unsafe_ask())

    def note(self, renderable: Any) -> None:
        """Print on stderr through gale_cli.output (the one module that knows rich)."""
        from gale_cli import output

        output.show(renderable)
