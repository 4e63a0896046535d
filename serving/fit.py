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
    """Estimate memory for the spec's model on its hardware profile."""
    entry = spec.model_ref.catalog_entry
    if entry is None:
        return FitVerdict(fits=None)
    profile = spec.profile
    # GPUs serve in 16-bit; the CPU engine computes in 32-bit floats.
    bytes_per_value = 2 if profile.is_gpu else 4
    weights = entry.params_b * 1e9 * bytes_per_value
    per_token = 2 * entry.layers * entry.kv_heads * entry.head_dim * bytes_per_value
    cache = per_token * spec.max_length * spec.batch_size
    need = (weights + cache) * HEADROOM
    have = profile.accelerator_memory_gb * GB
    return FitVerdict(
        fits=need <= have,
        need_gb=need / GB,
        have_gb=have / GB,
        weights_gb=weights / GB,
        cache_gb=cache / GB,
    )
