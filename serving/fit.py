"""The fit check: do the weights and the KV cache fit the profile's memory, with headroom?"""

from __future__ import annotations

from dataclasses import dataclass

from serving.spec import DeploymentSpec

GB = 1e9
HEADROOM = 1.2  # activations, the runtime and fragmentation need room beyond weights + cache


@dataclass(frozen=True)
class FitVerdict:
    """The outcome of the fit check; `fits` is None when gale has no figures for the model."""

    fits: bool | None
    need_gb: float = 0.0
    have_gb: float = 0.0
    weights_gb: float = 0.0
    cache_gb: float = 0.0

    @property
    def message(self) -> str:
        """One line a person can act on."""
        if self.fits is None:
            return "not checked: gale has no size figures for this model"
        detail = (
            f"needs {self.need_gb:.1f} GB (weights {self.weights_gb:.1f} GB + cache "
            f"{self.cache_gb:.1f} GB, +{HEADROOM - 1:.0%} headroom) of {self.have_gb:.1f} GB"
        )
        if self.fits:
            return f"fits: {detail}"
        short = self.need_gb - self.have_gb
        return (
            f"does not fit: {detail}, short by {short:.1f} GB; choose larger hardware, "
            "or lower the maximum length or the batch size"
        )


def check_fit(spec: DeploymentSpec) -> FitVerdict:
    """Estimate memory for the spec's model on its hardware profile.

    The llama.cpp engine keeps a GGUF's weights as they are in the file (quantized) and
    its KV cache in 16-bit; the others dequantize: 16-bit on GPUs, 32-bit floats on CPU.
    """
    if spec.effective_engine == "llamacpp":
        found = _gguf_figures(spec)
        if found is not None:
            weights, per_token = found
            return _verdict(spec, weights, per_token * spec.max_length * spec.batch_size)
    entry = spec.model_ref.catalog_entry
    if entry is None:
        return FitVerdict(fits=None)
    profile = spec.profile
    bytes_per_value = 2 if profile.is_gpu else 4
    weights = entry.params_b * 1e9 * bytes_per_value
    per_token = 2 * entry.layers * entry.kv_heads * entry.head_dim * bytes_per_value
    return _verdict(spec, weights, per_token * spec.max_length * spec.batch_size)


def _gguf_figures(spec: DeploymentSpec) -> tuple[float, float] | None:
    """A GGUF's size on disk and its 16-bit KV bytes per token, when the file is here."""
    from pathlib import Path

    from serving import catalog

    ref = spec.model_ref
    entry = ref.catalog_entry
    path: Path | None = Path(ref.value) if ref.kind == "path" else None
    if entry is not None and entry.source.package and entry.source.file:
        path = catalog.packaged_file(entry.source.package, entry.source.file)
    if path is None or not path.is_file():
        return None
    if entry is not None:
        return path.stat().st_size, 2 * entry.layers * entry.kv_heads * entry.head_dim * 2
    from serving.engines.llamacpp_server import gguf_shape

    return path.stat().st_size, gguf_shape(str(path)).kv_bytes_per_token


def _verdict(spec: DeploymentSpec, weights: float, cache: float) -> FitVerdict:
    profile = spec.profile
    need = (weights + cache) * HEADROOM
    have = profile.accelerator_memory_gb * GB
    return FitVerdict(
        fits=need <= have,
        need_gb=need / GB,
        have_gb=have / GB,
        weights_gb=weights / GB,
        cache_gb=cache / GB,
    )
