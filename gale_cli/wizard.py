"""The deploy wizard: model, general details, parameters, hardware, review.

It asks only for what flags and files left open. Its steps, questions and their order come
from the spec's field declarations; every rule lives in DeploymentSpec, and each answer is
checked by validating a trial spec and picking out that field's problems.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_origin

from pydantic import ValidationError

from gale_cli.errors import InvalidSpec
from gale_cli.prompts import Prompter
from gale_cli.specinput import field_label, problems
from serving import catalog
from serving.fit import check_fit
from serving.spec import GROUPS, DeploymentSpec, field_meta, fields, range_text

MODEL_STEP = "model"
TERMS = "I accept all the terms and conditions"
STOP_SEPARATOR = "|"
HF_CHOICE = "\0hf"  # a value no catalog id or model reference can take

# How to type a list: stop sequences may hold commas, so they have their own separator.
TYPING = {"stop": f"separate with {STOP_SEPARATOR}; \\n for a newline"}
LIST_TYPING = "comma-separated"
_ESCAPES = (("\\n", "\n"), ("\\t", "\t"))


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags; blanks dropped."""
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def parse_stops(text: str) -> list[str]:
    """`|`-separated stop sequences, trimmed; `\\n` and `\\t` stand for a newline and a tab."""
    stops = []
    for part in text.split(STOP_SEPARATOR):
        part = part.strip()
        for typed, char in _ESCAPES:
            part = part.replace(typed, char)
        if part:
            stops.append(part)
    return stops


def format_stops(stops: list[str]) -> str:
    """Stop sequences as `parse_stops` reads them back."""
    shown = []
    for stop in stops:
        for typed, char in _ESCAPES:
            stop = stop.replace(char, typed)
        shown.append(stop)
    return f" {STOP_SEPARATOR} ".join(shown)


def parse_number(text: str) -> int | float:
    """An int when the text is whole, else a float; ValueError with a reason otherwise."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None


def parse_hf(text: str) -> str:
    """`ORG/NAME[@REVISION]` (a leading `hf:` is fine) as a model reference `hf:ORG/NAME[@REV]`."""
    text = text.strip()
    return text if text.startswith("hf:") else f"hf:{text}"


def _is_number(field: str) -> bool:
    return DeploymentSpec.model_fields[field].annotation in (int, float)


def _is_list(field: str) -> bool:
    return get_origin(DeploymentSpec.model_fields[field].annotation) is list


def question(field: str) -> str:
    """A field's question: its label, how to type it, and its numeric range."""
    meta = field_meta(field)
    how = TYPING.get(field) or (LIST_TYPING if _is_list(field) else meta.unit)
    notes = [how, range_text(field) if _is_number(field) else ""]
    return " ".join([meta.question or meta.label, *(f"({note})" for note in notes if note)])


def steps() -> dict[str, tuple[str, ...]]:
    """Each wizard step (a group of the spec) and the fields it asks for, in order."""
    return {group: tuple(f for f in fields(group=group) if field_meta(f).asked) for group in GROUPS}


def parse_answer(field: str, text: str) -> Any:
    """A typed answer for `field` from what was typed; the spec then checks its rules."""
    if field == "stop":
        return parse_stops(text)
    if _is_list(field):
        return parse_tags(text)
    if _is_number(field):
        return parse_number(text)
    return text.strip()


def format_answer(field: str, value: Any) -> str:
    """A value as the pre-filled text of its prompt."""
    if value is None:
        return ""
    if field == "stop":
        return format_stops(list(value))
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default(field: str) -> Any:
    info = DeploymentSpec.model_fields[field]
    return None if info.is_required() else info.get_default(call_default_factory=True)


class _Wizard:
    def __init__(self, initial: dict[str, Any], prompter: Prompter) -> None:
        self.answers = dict(initial)
        self.given = set(initial)
        self.prompter = prompter
        self.steps = steps()
        self.visited: set[str] = set()

    # One question per field.
    def ask(self, field: str) -> None:
        if field == "model":
            self.answers["model"] = self.ask_model_choice()
        elif field == "hardware":
            self.answers["hardware"] = self.ask_hardware()
        elif field_meta(field).asked:
            current = self.answers.get(field, _default(field))
            text = self.prompter.text(
                question(field), format_answer(field, current), lambda t: self.check(field, t)
            )
            self.answers[field] = parse_answer(field, text)
        else:  # not a wizard question (e.g. trust_remote_code): only a flag or the file sets it
            message = problems(self.answers).get(field, "invalid")
            raise InvalidSpec([(field_label(field), message)])

    def check(self, field: str, text: str) -> str | None:
        try:
            value = parse_answer(field, text)
        except ValueError as exc:
            return str(exc)
        return problems({**self.answers, field: value}).get(field)

    def ask_model_choice(self) -> str:
        current = str(self.answers.get("model", ""))
        choices: list[tuple[str, str]] = []
        keep = current not in catalog.models() and not current.startswith("hf:")
        if keep and current and "model" not in problems({"model": current}):
            choices.append((f"Keep {current}", current))  # e.g. a local path from a flag
        for entry in catalog.models().values():
            gated = ", gated" if entry.gated else ""
            title = (
                f"{entry.name} ({entry.id}): {entry.params_b:g}B params, "
                f"{entry.context_length:,} context, {entry.license}{gated}"
            )
            choices.append((title, entry.id))
        choices.append(("Import from Hugging Face…", HF_CHOICE))
        default = HF_CHOICE if current.startswith("hf:") else current or None
        choice = self.prompter.select(field_meta("model").label, choices, default)
        if choice != HF_CHOICE:
            return choice
        text = self.prompter.text(
            "Hugging Face repo (ORG/NAME[@REVISION])",
            current.removeprefix("hf:"),
            lambda t: problems({"model": parse_hf(t)}).get("model"),
        )
        return parse_hf(text)

    def ask_hardware(self) -> str:
        choices = []
        for profile in catalog.hardware().values():
            gpus = (
                f"{profile.gpus} x {profile.gpu_memory_gb:g} GB GPU" if profile.is_gpu else "no GPU"
            )
            title = f"{profile.name} ({profile.id}): {gpus}, {profile.price_per_hour:g}/hour"
            choices.append((title + self.fit_label(profile.id), profile.id))
        label = field_meta("hardware").label
        return self.prompter.select(label, choices, self.answers.get("hardware"))

    def fit_label(self, hardware: str) -> str:
        try:
            trial = DeploymentSpec.model_validate({**self.answers, "hardware": hardware})
        except ValidationError:
            return ""
        return " (model does not fit)" if check_fit(trial).fits is False else ""

    # Steps.
    def step(self, step: str, *, navigate: bool, can_go_back: bool) -> str:
        """Ask a step's fields; on the first visit skip those given. Return 'next' or 'back'."""
        first = step not in self.visited
        self.visited.add(step)
        asked = False
        for field in self.steps[step]:
            given = first and field in self.given
            # A given value is asked for only if it breaks a rule, checked in field order so
            # the person sees e.g. a --max-replicas below the min they have just typed.
            problem = problems(self.answers).get(field) if given else None
            if given and problem is None:
                continue
            if not asked and step != MODEL_STEP:
                self.prompter.note(GROUPS[step])
            asked = True
            if problem:
                self.prompter.note(f"{field}: {problem}")
            self.ask(field)
        self.fix(self.steps[step])
        if not asked or not navigate or not can_go_back or step == MODEL_STEP:
            return "next"
        where = f"{GROUPS[step]}: Next or Back?"
        return self.prompter.select(where, [("Next", "next"), ("Back", "back")], "next")

    def fix(self, only: tuple[str, ...] | None = None) -> None:
        """Re-ask fields (default: all) whose values break a rule, e.g. a flag's max below a min."""
        while errors := {
            f: m for f, m in problems(self.answers).items() if only is None or f in only
        }:
            for field, message in errors.items():
                self.prompter.note(f"{field}: {message}")
                self.ask(field)

    def review(self, render_review: Callable[[DeploymentSpec], Any]) -> DeploymentSpec | None:
        while True:
            self.fix()
            spec = DeploymentSpec.model_validate(self.answers)
            self.prompter.note(render_review(spec))
            choices = [("Deploy", "deploy")]
            choices += [(f"Edit {title.lower()}", step) for step, title in GROUPS.items()]
            choices.append(("Cancel", "cancel"))
            while True:
                action = self.prompter.select("Review", choices, "deploy")
                if action == "cancel":
                    return None
                if action != "deploy":
                    self.step(action, navigate=False, can_go_back=False)
                    break
                if self.prompter.confirm(TERMS, default=False):
                    return spec


def run_wizard(
    initial: dict[str, Any],
    prompter: Prompter,
    *,
    render_review: Callable[[DeploymentSpec], Any],
) -> DeploymentSpec | None:
    """Ask for what `initial` leaves open, then review; the accepted spec, or None if cancelled."""
    wizard = _Wizard(initial, prompter)
    order = list(wizard.steps)
    index = 0
    while index < len(order):
        move = wizard.step(order[index], navigate=True, can_go_back=index > 0)
        index = index + 1 if move == "next" else max(index - 1, 0)
    return wizard.review(render_review)
