"""Spec answers from a file and from flags, and the one place validation errors become lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gale_cli.errors import InvalidSpec, UsageError
from serving.spec import FLAGS, DeploymentSpec


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a mapping of spec fields."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UsageError(
            f"{path} is not valid YAML{where}",
            hint="a spec file is a mapping of fields, e.g. `name: my-model`",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{path} must hold a mapping of spec fields, not a {type(data).__name__}",
            hint="see examples/ for spec files",
        )
    return data


def merge(file_values: dict[str, Any], flag_values: dict[str, Any]) -> dict[str, Any]:
    """Flags override the file; flags not given (None or empty) leave the file's value."""
    merged = dict(file_values)
    for field, value in flag_values.items():
        if value is None or value == [] or value == ():
            continue
        merged[field] = list(value) if isinstance(value, tuple) else value
    return merged


def field_label(field: str) -> str:
    """A field as a person can find it: the spec key and its flag."""
    flag = FLAGS.get(field)
    return f"{field} ({flag})" if flag else field


def problems_of(error: ValidationError) -> list[tuple[str, str]]:
    """(field label, message) pairs from a pydantic error, worded for a person."""
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "spec"
        kind = item["type"]
        if kind == "missing":
            text = "required; " + (
                f"pass {FLAGS[field]} or set `{field}` in the spec file"
                if field in FLAGS
                else "set it in the spec file"
            )
        elif kind == "extra_forbidden":
            text = "unknown field; known fields: " + ", ".join(DeploymentSpec.model_fields)
        else:
            text = item["msg"].removeprefix("Value error, ")
            if len(item["loc"]) > 1:
                text = f"item {item['loc'][1]}: {text}"
        problems.append((field_label(field) if field in FLAGS else field, text))
    return problems


def validate(values: dict[str, Any]) -> DeploymentSpec:
    """A validated spec, or InvalidSpec naming every field that is wrong."""
    try:
        return DeploymentSpec.model_validate(values)
    except ValidationError as exc:
        raise InvalidSpec(problems_of(exc)) from None


def check_model_path(spec: DeploymentSpec, cluster_is_local: bool) -> None:
    """On a local cluster, a model path must exist here; a remote one checks its own disks."""
    ref = spec.model_ref
    if ref.kind == "path" and cluster_is_local and not Path(ref.value).exists():
        raise InvalidSpec(
            [("model (--model)", f"{ref.value} does not exist on this machine")],
            hint="give the absolute path of a model folder (safetensors) or a .gguf file",
        )
