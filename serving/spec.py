"""The deployment spec: one pydantic model for the wizard, flags, spec files and the server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from serving import catalog

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
HF_PATTERN = re.compile(r"^hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<revision>[\w./-]+))?$")

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=64)]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: a catalog id, a Hugging Face repo, or a local path."""

    kind: Literal["catalog", "hf", "path"]
    value: str
    revision: str | None = None

    @property
    def catalog_entry(self) -> catalog.CatalogModel | None:
        """The catalog model this refers to, if it is a catalog id."""
        return catalog.models()[self.value] if self.kind == "catalog" else None


COMMIT = re.compile(r"^[0-9a-f]{40}$")


def require_pinned(ref: ModelRef, text: str) -> None:
    """Running a repository's code needs a commit hash: a branch or tag can change under it."""
    entry = ref.catalog_entry
    revision = entry.source.revision if entry is not None else ref.revision
    hub = ref.kind == "hf" or (entry is not None and entry.source.repo is not None)
    if hub and not COMMIT.match(revision or ""):
        raise ValueError(
            f"trust_remote_code runs the repository's own code, so '{text}' must be pinned "
            "to a commit: write hf:ORG/NAME@<40-hex commit hash>"
        )


def parse_model_ref(text: str) -> ModelRef:
    """Parse `ID`, `hf:ORG/NAME[@REVISION]` or an absolute path; raise ValueError otherwise."""
    text = text.strip()
    if text.startswith("hf:"):
        match = HF_PATTERN.match(text)
        if not match:
            raise ValueError(
                f"'{text}' is not a Hugging Face reference; write hf:ORG/NAME or "
                "hf:ORG/NAME@REVISION, e.g. hf:Qwen/Qwen2.5-0.5B-Instruct@main"
            )
        return ModelRef("hf", match["repo"], match["revision"])
    if text.startswith(("/", "~", "./", "../")):
        if not text.startswith("/"):
            raise ValueError(
                f"'{text}' is a relative path; give the absolute path of the model "
                "folder or .gguf file, as the cluster sees it"
            )
        return ModelRef("path", text)
    if text in catalog.models():
        return ModelRef("catalog", text)
    raise ValueError(
        f"unknown model '{text}'; use a catalog id (see `gale models`), "
        "hf:ORG/NAME[@REVISION], or an absolute path to a model folder or .gguf file"
    )


class DeploymentSpec(BaseModel):
    """Everything that defines a deployment, grouped as the wizard's steps ask for it."""

    model_config = ConfigDict(extra="forbid")

    # General details
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Deployment name: the endpoint path and the Ray application name.",
    )
    description: str = Field(default="", max_length=500)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    model: str = Field(description="Catalog id, hf:ORG/NAME[@REVISION], or absolute path.")
    engine: Literal["auto", "transformers", "vllm"] = Field(
        default="auto", description="Inference engine; auto picks one (see the README)."
    )
    trust_remote_code: bool = Field(
        default=False, description="Run the model repository's own Python code (off unless asked)."
    )

    # Parameters
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_length: int = Field(default=256, ge=1, description="Most tokens one request generates.")
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=50, ge=1)
    stop: list[StopSequence] = Field(default_factory=list, max_length=4)
    batch_size: int = Field(default=8, ge=1, le=256, description="Inference batch size.")
    min_replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int = Field(default=1, ge=1, le=100)
    scale_up_delay: float = Field(default=30, ge=0, le=3600, description="Seconds.")
    scale_down_delay: float = Field(default=600, ge=0, le=86400, description="Seconds.")

    # Hardware
    hardware: str = Field(description="A hardware profile id (see `gale hardware`).")

    @field_validator("name", mode="before")
    @classmethod
    def _name_explained(cls, value: object) -> object:
        if isinstance(value, str) and not re.match(NAME_PATTERN, value):
            raise ValueError(
                f"'{value}' is not a valid name; use 1-63 lowercase letters, digits and "
                "hyphens, starting with a letter and ending with a letter or digit"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str) -> str:
        parse_model_ref(value)
        return value.strip()

    @field_validator("trust_remote_code")
    @classmethod
    def _remote_code_pinned(cls, value: bool, info: ValidationInfo) -> bool:
        model = info.data.get("model")
        if value and model:
            require_pinned(parse_model_ref(model), model)
        return value

    @field_validator("hardware")
    @classmethod
    def _hardware_known(cls, value: str) -> str:
        if value not in catalog.hardware():
            known = ", ".join(catalog.hardware())
            raise ValueError(f"unknown hardware profile '{value}'; choose one of: {known}")
        return value

    # Cross-field rules are field validators on the later field, so an error names it.
    @field_validator("max_length")
    @classmethod
    def _within_context(cls, value: int, info: ValidationInfo) -> int:
        model = info.data.get("model")
        entry = parse_model_ref(model).catalog_entry if model else None
        if entry is not None and value > entry.context_length:
            raise ValueError(
                f"{value} exceeds {entry.id}'s context length of {entry.context_length} tokens"
            )
        return value

    @field_validator("max_replicas")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")
        if low is not None and low > value:
            raise ValueError(f"{value} is below min_replicas ({low}); raise it or lower the min")
        return value

    @property
    def model_ref(self) -> ModelRef:
        """The parsed model reference."""
        return parse_model_ref(self.model)

    @property
    def effective_engine(self) -> Literal["transformers", "vllm"]:
        """The engine replicas run: `auto` is vLLM on GPU profiles, transformers on CPU ones."""
        if self.engine != "auto":
            return self.engine
        return "vllm" if self.profile.is_gpu else "transformers"

    @property
    def profile(self) -> catalog.HardwareProfile:
        """The hardware profile this spec names."""
        return catalog.hardware()[self.hardware]


# The wizard's steps and the spec fields each one asks for, in order.
STEPS: dict[str, tuple[str, ...]] = {
    "general": ("name", "description", "tags"),
    "parameters": (
        "temperature",
        "max_length",
        "top_p",
        "top_k",
        "stop",
        "batch_size",
        "min_replicas",
        "max_replicas",
        "scale_up_delay",
        "scale_down_delay",
    ),
    "hardware": ("hardware",),
}

# Each field's command-line flag, for messages that tell a person what to change.
FLAGS: dict[str, str] = {
    "name": "--name",
    "description": "--description",
    "tags": "--tag",
    "model": "--model",
    "engine": "--engine",
    "trust_remote_code": "--trust-remote-code",
    "temperature": "--temperature",
    "max_length": "--max-length",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "stop": "--stop",
    "batch_size": "--batch-size",
    "min_replicas": "--min-replicas",
    "max_replicas": "--max-replicas",
    "scale_up_delay": "--scale-up-delay",
    "scale_down_delay": "--scale-down-delay",
    "hardware": "--hardware",
}

REQUIRED: tuple[str, ...] = tuple(
    name for name, field in DeploymentSpec.model_fields.items() if field.is_required()
)
