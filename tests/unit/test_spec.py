"""Every rule of the deployment spec, valid and invalid, table-driven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gale_cli.commands.specflags import README_END, README_START
from serving.spec import (
    REQUIRED,
    DeploymentSpec,
    field_meta,
    fields,
    parse_model_ref,
    range_text,
    spec_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"

BASE: dict[str, Any] = {"name": "demo", "model": "smollm2-135m-instruct", "hardware": "cpu"}


def spec(**changes: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({**BASE, **changes})


def error_fields(**changes: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        spec(**changes)
    return {str(e["loc"][0]) if e["loc"] else "": e["msg"] for e in info.value.errors()}


VALID = [
    ("name", "a"),
    ("name", "a" * 63),
    ("name", "llama-3-8b"),
    ("name", "x9"),
    ("description", "d" * 500),
    ("tags", [f"t{i}" for i in range(20)]),
    ("model", "hf:Qwen/Qwen2.5-0.5B-Instruct"),
    ("model", "hf:Qwen/Qwen2.5-0.5B-Instruct@a1b2c3"),
    ("model", "/models/my-model"),
    ("model", "/models/file.gguf"),
    ("temperature", 0),
    ("temperature", 2),
    ("max_length", 1),
    ("max_length", 8192),
    ("top_p", 1),
    ("top_p", 0.01),
    ("top_k", 1),
    ("stop", ["a", "b", "c", "d"]),
    ("batch_size", 1),
    ("batch_size", 256),
    ("min_replicas", 0),
    ("max_replicas", 100),
    ("scale_up_delay", 0),
    ("scale_up_delay", 3600),
    ("scale_down_delay", 86400),
    ("hardware", "a10-x4"),
]


@pytest.mark.parametrize(("field", "value"), VALID)
def test_valid_values_are_accepted(field: str, value: Any) -> None:
    assert getattr(spec(**{field: value}), field) == value


INVALID = [
    ("name", "", "not a valid name"),
    ("name", "a" * 64, "not a valid name"),
    ("name", "Upper", "not a valid name"),
    ("name", "9starts-with-digit", "not a valid name"),
    ("name", "ends-with-hyphen-", "not a valid name"),
    ("name", "has_underscore", "not a valid name"),
    ("name", "has space", "not a valid name"),
    ("description", "d" * 501, "at most 500"),
    ("tags", ["t"] * 21, "at most 20"),
    ("tags", [""], "at least 1"),
    ("tags", ["x" * 33], "at most 32"),
    ("model", "no-such-model", "unknown model"),
    ("model", "hf:not a repo", "not a Hugging Face reference"),
    ("model", "./relative", "relative path"),
    ("temperature", -0.1, "greater than or equal to 0"),
    ("temperature", 2.01, "less than or equal to 2"),
    ("temperature", "hot", "valid number"),
    ("max_length", 0, "greater than or equal to 1"),
    ("max_length", 8193, "context length of 8192"),
    ("top_p", 0, "greater than 0"),
    ("top_p", 1.01, "less than or equal to 1"),
    ("top_k", 0, "greater than or equal to 1"),
    ("top_k", 1.5, "valid integer"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4"),
    ("stop", [""], "at least 1"),
    ("batch_size", 0, "greater than or equal to 1"),
    ("batch_size", 257, "less than or equal to 256"),
    ("min_replicas", -1, "greater than or equal to 0"),
    ("max_replicas", 0, "greater than or equal to 1"),
    ("max_replicas", 101, "less than or equal to 100"),
    ("scale_up_delay", -1, "greater than or equal to 0"),
    ("scale_up_delay", 3601, "less than or equal to 3600"),
    ("scale_down_delay", 86401, "less than or equal to 86400"),
    ("hardware", "tpu-v5", "unknown hardware profile"),
]


@pytest.mark.parametrize(("field", "value", "reason"), INVALID)
def test_invalid_values_name_their_field(field: str, value: Any, reason: str) -> None:
    errors = error_fields(**{field: value})
    assert field in errors, errors
    assert reason in errors[field]


def test_min_above_max_is_reported_on_max_replicas() -> None:
    errors = error_fields(min_replicas=3, max_replicas=2)
    assert "below min_replicas (3)" in errors["max_replicas"]


def test_unknown_field_is_refused() -> None:
    assert "temprature" in error_fields(temprature=0.5)


def test_required_fields_are_name_model_hardware() -> None:
    assert set(REQUIRED) == {"name", "model", "hardware"}
    with pytest.raises(ValidationError) as info:
        DeploymentSpec.model_validate({})
    assert {e["loc"][0] for e in info.value.errors()} == {"name", "model", "hardware"}


def test_defaults_match_the_documented_ones() -> None:
    s = spec()
    assert (s.scale_up_delay, s.scale_down_delay) == (30, 600)
    assert (s.min_replicas, s.max_replicas, s.trust_remote_code) == (1, 1, False)


def test_tags_are_deduplicated_in_order() -> None:
    assert spec(tags=["b", "a", "b"]).tags == ["b", "a"]


def test_context_limit_is_not_checked_for_models_outside_the_catalog() -> None:
    assert spec(model="hf:org/name", max_length=100_000).max_length == 100_000


@pytest.mark.parametrize(
    ("text", "kind", "value", "revision"),
    [
        ("smollm2-135m-instruct", "catalog", "smollm2-135m-instruct", None),
        ("hf:meta-llama/Llama-3.1-8B-Instruct", "hf", "meta-llama/Llama-3.1-8B-Instruct", None),
        ("hf:org/name@v1.0", "hf", "org/name", "v1.0"),
        ("/srv/models/x.gguf", "path", "/srv/models/x.gguf", None),
    ],
)
def test_model_references_parse(text: str, kind: str, value: str, revision: str | None) -> None:
    ref = parse_model_ref(text)
    assert (ref.kind, ref.value, ref.revision) == (kind, value, revision)


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("temperature", "0 to 2"),
        ("top_p", "above 0, at most 1"),
        ("top_k", "at least 1"),
        ("description", "up to 500 characters"),
        ("tags", "up to 20, each 1 to 32 characters"),
        ("engine", "auto, transformers, vllm or llamacpp"),
        ("name", ""),
    ],
)
def test_range_text_reads_the_field_constraints(field: str, text: str) -> None:
    assert range_text(field) == text


def test_every_field_declares_how_it_is_shown_and_where_serve_keeps_it() -> None:
    assert set(fields()) == set(DeploymentSpec.model_fields)
    for field in fields():
        meta = field_meta(field)
        assert meta.label and DeploymentSpec.model_fields[field].description, field


def test_readme_spec_table_is_the_generated_one() -> None:
    readme = README.read_text()
    table = readme.split(README_START + "\n", 1)[1].split(README_END, 1)[0]
    assert table == spec_table(), "run `python -m gale_cli.commands.specflags`"
    assert "| `scale_down_delay` | `--scale-down-delay` |" in table
    assert "(0 to 86400) | 600 |" in table
