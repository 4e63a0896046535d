"""Spec answers from a file and from flags, and the one place validation errors become lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

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


def problems(values: Mapping[str, Any]) -> dict[str, str]:
    """Each field's first broken rule in a spec built from `values`, worded for a person.

    Empty when `values` make a valid spec. List items are counted from 1, as people count.
    """
    try:
        DeploymentSpec.model_validate(values)
    except ValidationError as exc:
        found: dict[str, str] = {}
        for item in exc.errors():
            field = str(item["loc"][0]) if item["loc"] else "spec"
            found.setdefault(field, _worded(field, item))
        return found
    return {}


def _worded(field: str, item: ErrorDetails) -> str:
    if item["type"] == "missing":
        return "required; " + (
            f"pass {FLAGS[field]} or set `{field}` in the spec file"
            if field in FLAGS
            else "set it in the spec file"
        )
    if item["type"] == "extra_forbidden":
        return "unknown field; known fields: " + ", ".join(DeploymentSpec.model_fields)
    text = item["msg"].removeprefix("Value error, ")
    if len(item["loc"]) > 1 and isinstance(item["loc"][1], int):
        text = f"item {item['loc'][1] + 1}: {text}"
    return text


def validate(values: Mapping[str, Any]) -> DeploymentSpec:
    """A validated spec, or InvalidSpec naming every field that is wrong."""
    found = problems(values)
    if found:
        raise InvalidSpec([(field_label(field), message) for field, message in found.items()])
    return DeploymentSpec.model_validate(values)


def check_model_path(spec: DeploymentSpec, cluster_is_local: bool) -> None:
    """On a local cluster, a model path must exist here; a remote one checks its own disks."""
    ref = spec.model_ref
    if ref.kind == "path" and cluster_is_local and not Path(ref.value).exists():
        raise InvalidSpec(
            [(field_label("model"), f"{ref.value} does not exist on this machine")],
            hint="give the absolute path of a model folder (safetensors) or a .gguf file",
        )
