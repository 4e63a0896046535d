"""The wizard's flow with a scripted Prompter: no terminal, pure logic."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from gale_cli.errors import InvalidSpec
from gale_cli.specinput import problems
from gale_cli.wizard import (
    HF_CHOICE,
    TERMS,
    format_answer,
    format_stops,
    parse_hf,
    parse_number,
    parse_stops,
    parse_tags,
    question,
    run_wizard,
    steps,
)
from serving.spec import DeploymentSpec, fields

KEEP = object()  # accept the pre-filled default


class ScriptedPrompter:
    """Answers questions from a script of (expected message prefix, answer) pairs.

    A text answer the validator rejects is recorded in `rejected`, and the next scripted
    entry answers the same question again, as a person retyping would.
    """

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = list(script)
        self.asked: list[str] = []
        self.defaults: dict[str, list[Any]] = {}
        self.rejected: list[tuple[str, str, str]] = []
        self.notes: list[Any] = []

    def _next(self, message: str) -> Any:
        assert self.script, f"unscripted question: {message!r}"
        expected, answer = self.script.pop(0)
        assert message.startswith(expected), f"asked {message!r}, script expected {expected!r}"
        self.asked.append(message)
        return answer

    def text(
        self, message: str, default: str = "", validate: Callable[[str], str | None] | None = None
    ) -> str:
        self.defaults.setdefault(message, []).append(default)
        while True:
            answer = self._next(message)
            answer = default if answer is KEEP else answer
            reason = validate(answer) if validate else None
            if reason is None:
                return answer
            self.rejected.append((message, answer, reason))

    def select(self, message: str, choices: Sequence[tuple[str, Any]], default: Any = None) -> Any:
        self.defaults.setdefault(message, []).append(default)
        answer = self._next(message)
        answer = default if answer is KEEP else answer
        assert answer in [value for _, value in choices], f"{answer!r} is not offered"
        return answer

    def confirm(self, message: str, default: bool = False) -> bool:
        assert default is False
        return bool(self._next(message))

    def note(self, renderable: Any) -> None:
        self.notes.append(renderable)

    def done(self) -> None:
        assert not self.script, f"script not used up: {self.script}"


class Review:
    """A render_review stand-in that remembers the specs it was shown."""

    def __init__(self) -> None:
        self.specs: list[DeploymentSpec] = []

    def __call__(self, spec: DeploymentSpec) -> str:
        self.specs.append(spec)
        return f"REVIEW {spec.name}"


MODEL = [("Model", "smollm2-135m-instruct")]
GENERAL = [
    ("Deployment name", "my-bot"),
    ("Description", "A small helper"),
    ("Tags", "chat, demo"),
    ("General details", "next"),
]
PARAMETERS = [
    ("Temperature", "0.2"),
    ("Maximum length", "128"),
    ("Top p", "0.9"),
    ("Top k", "40"),
    ("Stop sequences", "</s> | \\nUser:"),
    ("Inference batch size", "4"),
    ("Min replicas", "1"),
    ("Max replicas", "3"),
    ("Scale-up delay", "15"),
    ("Scale-down delay", "120"),
    ("Parameters", "next"),
]
HARDWARE = [("Hardware", "cpu"), ("Hardware: Next", "next")]
ACCEPT = [("Review", "deploy"), (TERMS, True)]


def run(script: list[tuple[str, Any]], initial: dict[str, Any] | None = None, **kw: Any):
    prompter = ScriptedPrompter(script)
    review = Review()
    spec = run_wizard(initial or {}, prompter, render_review=review, **kw)
    prompter.done()
    return spec, prompter, review


def test_full_pass_in_order() -> None:
    spec, prompter, review = run(MODEL + GENERAL + PARAMETERS + HARDWARE + ACCEPT)
    assert spec is not None
    # Built from these values, a field not listed keeps its default, as its question did.
    assert spec == DeploymentSpec.model_validate(
        {
            "name": "my-bot",
            "description": "A small helper",
            "tags": ["chat", "demo"],
            "model": "smollm2-135m-instruct",
            "engine": "auto",
            "trust_remote_code": False,
            "temperature": 0.2,
            "max_length": 128,
            "top_p": 0.9,
            "top_k": 40,
            "stop": ["</s>", "\nUser:"],
            "batch_size": 4,
            "min_replicas": 1,
            "max_replicas": 3,
            "scale_up_delay": 15.0,
            "scale_down_delay": 120.0,
            "hardware": "cpu",
        }
    )
    assert review.specs == [spec]
    assert "REVIEW my-bot" in prompter.notes
    assert prompter.notes.index("General details") < prompter.notes.index("Parameters")
    assert not prompter.rejected


def test_prompts_are_prefilled_with_spec_defaults() -> None:
    keep_all = [(label, KEEP) for label, _ in PARAMETERS[:-1]] + [("Parameters", "next")]
    spec, prompter, _ = run(MODEL + GENERAL + keep_all + HARDWARE + ACCEPT)
    assert spec is not None
    defaults = DeploymentSpec.model_fields
    for field in ("temperature", "max_length", "top_p", "top_k", "batch_size", "min_replicas"):
        assert getattr(spec, field) == defaults[field].default
    assert prompter.defaults["Temperature (0 to 2)"] == ["0.7"]
    assert prompter.defaults["Scale-down delay (s) (0 to 86400)"] == ["600"]


def test_back_from_parameters_keeps_answers() -> None:
    params_then_back = PARAMETERS[:-1] + [("Parameters", "back")]
    general_again = [
        ("Deployment name", KEEP),
        ("Description", "Changed my mind"),
        ("Tags", KEEP),
        ("General details", "next"),
    ]
    params_again = [(label, KEEP) for label, _ in PARAMETERS[:-1]] + [("Parameters", "next")]
    spec, prompter, _ = run(
        MODEL + GENERAL + params_then_back + general_again + params_again + HARDWARE + ACCEPT
    )
    assert spec is not None
    assert prompter.defaults["Deployment name"] == ["", "my-bot"]
    assert prompter.defaults["Tags (comma-separated)"] == ["", "chat, demo"]
    assert spec.description == "Changed my mind"
    assert spec.tags == ["chat", "demo"]
    assert (spec.temperature, spec.max_replicas, spec.stop) == (0.2, 3, ["</s>", "\nUser:"])


def test_back_from_general_goes_to_model_choice() -> None:
    back = [*GENERAL[:-1], ("General details", "back")]
    again = [("Model", "qwen2.5-0.5b-instruct"), *[(label, KEEP) for label, _ in GENERAL[:-1]]]
    script = MODEL + back + again + [("General details", "next")] + PARAMETERS + HARDWARE + ACCEPT
    spec, prompter, _ = run(script)
    assert spec is not None
    assert spec.model == "qwen2.5-0.5b-instruct"
    assert prompter.defaults["Model"] == [None, "smollm2-135m-instruct"]


@pytest.mark.parametrize(
    ("label", "bad", "reason"),
    [
        ("Deployment name", "Bad_Name", "'Bad_Name' is not a valid name"),
        ("Top p", "0", "greater than 0"),
        ("Top k", "many", "'many' is not a number"),
        ("Inference batch size", "2.5", "valid integer"),
        ("Max replicas", "101", "less than or equal to 100"),
        ("Maximum length", "9000", "exceeds smollm2-135m-instruct's context length of 8192"),
        ("Tags", "ok, " + "x" * 40, "item 2: String should have at most 32 characters"),
    ],
)
def test_bad_answer_is_reasked_with_the_reason(label: str, bad: str, reason: str) -> None:
    script = MODEL + GENERAL + PARAMETERS + HARDWARE + ACCEPT
    at = next(i for i, (expected, _) in enumerate(script) if expected == label)
    script.insert(at, (label, bad))
    spec, prompter, _ = run(script)
    assert spec is not None
    [(message, answer, why)] = prompter.rejected
    assert message.startswith(label) and answer == bad
    assert reason in why


def test_max_replicas_below_the_min_typed_just_before() -> None:
    at = [label for label, _ in PARAMETERS].index("Min replicas")
    params = [
        *PARAMETERS[:at],
        ("Min replicas", "5"),
        ("Max replicas", KEEP),  # the pre-filled 1 is below 5
        ("Max replicas", "6"),
        *PARAMETERS[at + 2 :],
    ]
    spec, prompter, _ = run(MODEL + GENERAL + params + HARDWARE + ACCEPT)
    assert spec is not None and (spec.min_replicas, spec.max_replicas) == (5, 6)
    assert "1 is below min_replicas (5)" in prompter.rejected[0][2]


def test_fields_given_in_initial_are_not_asked() -> None:
    initial = {
        "model": "smollm2-135m-instruct",
        "name": "from-flag",
        "temperature": 1.1,
        "stop": ["###"],
        "hardware": "cpu-large",
    }
    general = [("Description", ""), ("Tags", ""), ("General details", "next")]
    params = [p for p in PARAMETERS if p[0] not in ("Temperature", "Stop sequences")]
    spec, prompter, _ = run(general + params + ACCEPT, initial)
    assert spec is not None
    assert not any(m.startswith(("Model", "Deployment name", "Hardware")) for m in prompter.asked)
    assert (spec.name, spec.temperature, spec.stop, spec.hardware) == (
        "from-flag",
        1.1,
        ["###"],
        "cpu-large",
    )


def test_everything_given_goes_straight_to_review() -> None:
    initial: dict[str, Any] = {
        field: DeploymentSpec.model_fields[field].get_default(call_default_factory=True)
        for step in steps().values()
        for field in step
    }
    initial |= {"model": "smollm2-135m-instruct", "name": "all-set", "hardware": "cpu"}
    for field in ("batch_size", "min_replicas", "max_replicas"):
        initial[field] = 2
    initial |= {"scale_up_delay": 1, "scale_down_delay": 2}
    spec, prompter, _ = run(ACCEPT, initial)
    assert spec is not None and spec.name == "all-set"
    assert prompter.asked == ["Review", TERMS]


def test_invalid_flag_value_is_asked_again_with_the_reason() -> None:
    initial = {"model": "smollm2-135m-instruct", "name": "Bad_Flag", "max_replicas": 1}
    general = [("Deployment name", "good-name"), *GENERAL[1:]]
    params = [p for p in PARAMETERS if p[0] != "Max replicas"]
    at = params.index(("Min replicas", "1"))
    params[at : at + 1] = [("Min replicas", "2"), ("Max replicas", "2")]  # 2 > --max-replicas 1
    spec, prompter, _ = run(general + params + HARDWARE + ACCEPT, initial)
    assert spec is not None and (spec.name, spec.max_replicas) == ("good-name", 2)
    assert any("name: 'Bad_Flag' is not a valid name" in str(n) for n in prompter.notes)
    assert any("max_replicas: 1 is below min_replicas (2)" in str(n) for n in prompter.notes)


def test_edit_parameters_from_the_review() -> None:
    edit: list[tuple[str, Any]] = [("Review", "parameters"), ("Temperature", "1.5")]
    edit += [(label, KEEP) for label, _ in PARAMETERS[1:-1]]
    spec, prompter, review = run(MODEL + GENERAL + PARAMETERS + HARDWARE + edit + ACCEPT)
    assert spec is not None and spec.temperature == 1.5
    assert [s.temperature for s in review.specs] == [0.2, 1.5]
    assert prompter.defaults["Temperature (0 to 2)"] == ["0.7", "0.2"]


def test_edit_hardware_and_general_from_the_review() -> None:
    edits = [
        ("Review", "hardware"),
        ("Hardware", "t4-single"),
        ("Review", "general"),
        ("Deployment name", "renamed"),
        ("Description", KEEP),
        ("Tags", KEEP),
    ]
    spec, prompter, review = run(MODEL + GENERAL + PARAMETERS + HARDWARE + edits + ACCEPT)
    assert spec is not None and (spec.hardware, spec.name) == ("t4-single", "renamed")
    assert len(review.specs) == 3
    assert prompter.defaults["Hardware"] == [None, "cpu"]


def test_changing_the_model_rechecks_max_length() -> None:
    script = [("Model", "qwen2.5-0.5b-instruct"), *GENERAL, *PARAMETERS, *HARDWARE]
    script[[label for label, _ in script].index("Maximum length")] = ("Maximum length", "20000")
    script += [("Review", "model"), ("Model", "smollm2-135m-instruct"), ("Maximum length", "4096")]
    spec, prompter, _ = run(script + ACCEPT)
    assert spec is not None and (spec.model, spec.max_length) == ("smollm2-135m-instruct", 4096)
    assert any("max_length: 20000 exceeds" in str(n) for n in prompter.notes)


def test_declining_the_terms_returns_to_the_review() -> None:
    decline = [("Review", "deploy"), (TERMS, False)]
    spec, prompter, review = run(MODEL + GENERAL + PARAMETERS + HARDWARE + decline + ACCEPT)
    assert spec is not None
    assert prompter.asked[-4:] == ["Review", TERMS, "Review", TERMS]


def test_cancel_returns_none() -> None:
    decline = [("Review", "deploy"), (TERMS, False), ("Review", "cancel")]
    spec, _, _ = run(MODEL + GENERAL + PARAMETERS + HARDWARE + decline)
    assert spec is None


def test_import_from_hugging_face() -> None:
    hf = [
        ("Model", HF_CHOICE),
        ("Hugging Face repo", "not a repo"),
        ("Hugging Face repo", "Qwen/Qwen2.5-0.5B-Instruct@main"),
    ]
    spec, prompter, _ = run(hf + GENERAL + PARAMETERS + HARDWARE + ACCEPT)
    assert spec is not None and spec.model == "hf:Qwen/Qwen2.5-0.5B-Instruct@main"
    assert "is not a Hugging Face reference" in prompter.rejected[0][2]


def test_hugging_face_model_is_prefilled_when_edited() -> None:
    initial = {"model": "hf:org/name@v1"}
    edit = [("Review", "model"), ("Model", KEEP), ("Hugging Face repo", KEEP)]
    spec, prompter, _ = run(GENERAL + PARAMETERS + HARDWARE + edit + ACCEPT, initial)
    assert spec is not None and spec.model == "hf:org/name@v1"
    assert prompter.defaults["Hugging Face repo (ORG/NAME[@REVISION])"] == ["org/name@v1"]


def test_a_given_model_is_not_asked_but_back_reaches_it() -> None:
    back = [*GENERAL[:-1], ("General details", "back"), ("Model", KEEP)]
    again = [(label, KEEP) for label, _ in GENERAL[:-1]] + [("General details", "next")]
    script = back + again + PARAMETERS + HARDWARE + ACCEPT
    spec, prompter, _ = run(script, {"model": "smollm2-135m-instruct"})
    assert spec is not None and spec.model == "smollm2-135m-instruct"
    assert prompter.asked[0] == "Deployment name"
    assert prompter.defaults["Model"] == ["smollm2-135m-instruct"]


def test_a_field_the_wizard_does_not_ask_is_an_error() -> None:
    initial = {"model": "smollm2-135m-instruct", "trust_remote_code": "perhaps"}
    prompter = ScriptedPrompter(GENERAL + PARAMETERS + HARDWARE)
    with pytest.raises(InvalidSpec, match="trust_remote_code"):
        run_wizard(initial, prompter, render_review=Review())


@pytest.mark.parametrize(
    ("text", "tags"),
    [("", []), ("a", ["a"]), (" a, b ,,c ", ["a", "b", "c"])],
)
def test_parse_tags(text: str, tags: list[str]) -> None:
    assert parse_tags(text) == tags


@pytest.mark.parametrize(
    ("text", "stops"),
    [
        ("", []),
        ("###", ["###"]),
        ("a, b | c", ["a, b", "c"]),
        ("\\n\\n | User:\\t", ["\n\n", "User:\t"]),
        (" | x |", ["x"]),
    ],
)
def test_parse_stops_and_back(text: str, stops: list[str]) -> None:
    assert parse_stops(text) == stops
    assert parse_stops(format_stops(stops)) == stops


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), (" 0.5 ", 0.5), ("1e3", 1000.0), ("-2", -2)],
)
def test_parse_number(text: str, value: float) -> None:
    parsed = parse_number(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["", "abc", "1,5"])
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a number"):
        parse_number(text)


@pytest.mark.parametrize(
    ("text", "ref"),
    [("org/name", "hf:org/name"), (" org/name@rev ", "hf:org/name@rev"), ("hf:o/n", "hf:o/n")],
)
def test_parse_hf(text: str, ref: str) -> None:
    assert parse_hf(text) == ref


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("temperature", 0.7, "0.7"),
        ("scale_up_delay", 30.0, "30"),
        ("tags", ["a", "b"], "a, b"),
        ("stop", ["\n", "x"], "\\n | x"),
        ("name", None, ""),
    ],
)
def test_format_answer(field: str, value: Any, text: str) -> None:
    assert format_answer(field, value) == text


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("temperature", "Temperature (0 to 2)"),
        ("top_p", "Top p (above 0, at most 1)"),
        ("max_length", "Maximum length (tokens to generate) (at least 1)"),
        ("tags", "Tags (comma-separated)"),
        ("stop", "Stop sequences (separate with |; \\n for a newline)"),
        ("scale_down_delay", "Scale-down delay (s) (0 to 86400)"),
        ("name", "Deployment name"),
    ],
)
def test_questions_come_from_the_field_declarations(field: str, text: str) -> None:
    assert question(field) == text


def test_steps_ask_every_field_but_those_only_a_flag_sets() -> None:
    asked = [field for fields_of_step in steps().values() for field in fields_of_step]
    only_flags = ("trust_remote_code", "engine", "model_commit")
    assert asked == [f for f in fields() if f not in only_flags and not f.startswith("key_")]
    assert list(steps()) == ["model", "general", "parameters", "hardware"]


def test_problems_picks_each_field_and_counts_items_from_1() -> None:
    found = problems({"name": "x", "model": "smollm2-135m-instruct", "top_p": 0})
    assert set(found) == {"top_p", "hardware"}
    assert "pass --hardware" in found["hardware"]
    found = problems({"name": "x", "model": "smollm2-135m-instruct", "tags": ["ok", ""]})
    assert found["tags"].startswith("item 2: ")
