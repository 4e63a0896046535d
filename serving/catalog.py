"""The model and hardware catalogs, loaded from the YAML files beside this module."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DATA_DIR = Path(__file__).parent / "data"
# Bytes in a GiB: the unit of every memory figure here (memory_gb), as Ray counts memory.
GIB = 1024**3

# How a model writes a tool call of its own choosing: vLLM's `--tool-call-parser` names.
ToolCallFormat = Literal["hermes", "llama3_json", "llama4_pythonic", "mistral", "openai"]
# How a reasoning model marks its thinking: vLLM's `--reasoning-parser` names.
ReasoningParser = Literal["qwen3", "openai_gptoss"]


class WeightsOrigin(BaseModel):
    """Where a catalog model's weights come from: a Hugging Face repo or a packaged file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str | None = None
    revision: str | None = None
    package: str | None = None
    file: str | None = None


class CatalogModel(BaseModel):
    """One model gale knows by id, with the figures the fit check needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    family: str
    source: WeightsOrigin
    params_b: float = Field(gt=0)
    context_length: int = Field(gt=0)
    layers: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    license: str
    gated: bool
    tags: tuple[str, ...] = ()
    description: str = ""
    tool_call_format: ToolCallFormat | None = None
    """How the model writes a tool call of its own choosing (vLLM's parser names, e.g.
    `hermes`, `llama3_json`, `mistral`); None when it has no such format."""
    reasoning_parser: ReasoningParser | None = None
    """How a reasoning model marks its thinking text (vLLM's parser names: `qwen3` for
    `<think>...</think>`, `openai_gptoss` for harmony's analysis channel); None otherwise."""


class HardwareProfile(BaseModel):
    """What one replica gets: GPUs, host CPUs and memory, and its price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    gpus: int = Field(ge=0)
    gpu_memory_gb: float = Field(default=0, ge=0)
    accelerator_type: Literal["A10G", "T4", "A100", "L4", "H100"] | None = None
    cpus: int = Field(gt=0)
    memory_gb: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)

    @property
    def is_gpu(self) -> bool:
        """Whether replicas on this profile get GPUs."""
        return self.gpus > 0

    @property
    def accelerator_memory_gb(self) -> float:
        """Memory the model may use: all GPUs of a replica, or host memory on CPU."""
        return self.gpus * self.gpu_memory_gb if self.is_gpu else self.memory_gb


@cache
def models() -> dict[str, CatalogModel]:
    """Every catalog model, by id, in file order."""
    rows = yaml.safe_load((DATA_DIR / "models.yaml").read_text())
    return {row["id"]: CatalogModel.model_validate(row) for row in rows}


@cache
def hardware() -> dict[str, HardwareProfile]:
    """Every hardware profile, by id, in file order."""
    rows = yaml.safe_load((DATA_DIR / "hardware.yaml").read_text())
    return {row["id"]: HardwareProfile.model_validate(row) for row in rows}


def packaged_file(package: str, file: str) -> Path | None:
    """Locate a file shipped inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / file
    return path if path.is_file() else None
