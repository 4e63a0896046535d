"""The deployment spec: one pydantic model for the wizard, flags, spec files and the server."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Annotated, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo

from serving import catalog

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_RULE = (
    "1-63 lowercase letters, digits and hyphens, starting with a letter and ending with a "
    "letter or digit"
)
HF_PATTERN = re.compile(r"^hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<revision>[\w./-]+))?$")

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=64)]


Group = Literal["model", "general", "parameters", "hardware"]
Place = Literal["args", "user_config", "parameters", "autoscaling_config"]

# The wizard's steps, the review's sections and the --help panels, in order, with their titles.
GROUPS: dict[str, str] = {
    "model": "Model",
    "general": "General details",
    "parameters": "Parameters",
    "hardware": "Hardware",
}


@dataclass(frozen=True)
class FieldMeta:
    """How people see a spec field (flag, wizard, review) and where Serve's config keeps it.

    `serve` says what a change costs: `args` are what replicas start with (a change replaces
    them); `user_config` (general details), its `parameters`, and `autoscaling_config` are
    applied in place.
    """

    group: Group
    label: str  # its name in the review, and in the wizard unless `question` says otherwise
    _: KW_ONLY
    serve: Place
    serve_key: str = ""  # its key there, when Ray's name is not the field's
    flag: str = ""  # its command-line flag; --field-name unless given
    question: str = ""  # the wizard's wording, when not the label
    unit: str = ""  # shown after its values
    asked: bool = True  # whether the wizard asks for it (else only a flag or the file sets it)
    reviewed: bool = True  # whether the review shows it


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

    @property
    def is_gguf(self) -> bool:
        """Whether this names a GGUF file (a catalog model shipped as one, or a .gguf path);
        a hub repo's format is known only once it is resolved."""
        entry = self.catalog_entry
        if entry is not None:
            return (entry.source.file or "").endswith(".gguf")
        return self.kind == "path" and self.value.endswith(".gguf")


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
        revision = match["revision"]
        # Both become paths in the hub cache: nothing may climb out of it or hide in it.
        parts = revision.split("/") if revision else []
        if ".." in text or any(not part or part.startswith(".") for part in parts):
            raise ValueError(
                f"'{text}' is not a Hugging Face reference: the name and revision may not "
                "contain '..', and no part of a revision may be empty or start with '.'"
            )
        return ModelRef("hf", match["repo"], revision)
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
    """Everything that defines a deployment, grouped as the wizard's steps ask for it.

    Each field is declared once: its type, default and rules (pydantic), the sentence that
    describes it (`description`), and a `FieldMeta` saying how people see it and where the
    Serve config keeps it. Flags, the wizard, the review, the README table and the Serve
    config mapping are all derived from these declarations.
    """

    model_config = ConfigDict(extra="forbid")

    # General details
    name: Annotated[str, FieldMeta("general", "Deployment name", serve="user_config")] = Field(
        pattern=NAME_PATTERN,
        description=f"The endpoint path and the Ray application name: {NAME_RULE}",
    )
    description: Annotated[str, FieldMeta("general", "Description", serve="user_config")] = Field(
        default="", max_length=500, description="What the deployment is for"
    )
    tags: Annotated[list[Tag], FieldMeta("general", "Tags", serve="user_config", flag="--tag")] = (
        Field(default_factory=list, max_length=20, description="Tags to find it by")
    )
    model: Annotated[str, FieldMeta("model", "Model", serve="args")] = Field(
        description="A catalog id, hf:ORG/NAME[@REVISION], or the absolute path of a model "
        "folder or .gguf file"
    )
    model_commit: Annotated[
        str | None,
        FieldMeta("model", "Pinned commit", serve="args", asked=False),
    ] = Field(
        default=None,
        pattern=COMMIT.pattern,
        description="The Hub commit the model's revision resolved to at deploy time (gale sets "
        "it; replicas download exactly this commit)",
    )
    trust_remote_code: Annotated[
        bool, FieldMeta("general", "Trust remote code", serve="args", asked=False, reviewed=False)
    ] = Field(default=False, description="Run the model repository's own Python code")

    # Parameters
    temperature: Annotated[float, FieldMeta("parameters", "Temperature", serve="parameters")] = (
        Field(default=0.7, ge=0, le=2, description="Sampling temperature; 0 is greedy")
    )
    max_length: Annotated[
        int,
        FieldMeta(
            "parameters",
            "Maximum length",
            serve="parameters",
            question="Maximum length (tokens to generate)",
        ),
    ] = Field(
        default=256,
        ge=1,
        description="Most tokens one request generates, at most the model's context length",
    )
    top_p: Annotated[float, FieldMeta("parameters", "Top p", serve="parameters")] = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Sample from the most likely tokens that make up this much probability",
    )
    top_k: Annotated[int, FieldMeta("parameters", "Top k", serve="parameters")] = Field(
        default=50, ge=1, description="Sample from this many most likely tokens"
    )
    stop: Annotated[
        list[StopSequence], FieldMeta("parameters", "Stop sequences", serve="parameters")
    ] = Field(default_factory=list, max_length=4, description="Sequences that end generation")
    batch_size: Annotated[
        int, FieldMeta("parameters", "Inference batch size", serve="parameters")
    ] = Field(default=8, ge=1, le=256, description="Requests a replica generates for together")
    min_replicas: Annotated[
        int, FieldMeta("parameters", "Min replicas", serve="autoscaling_config")
    ] = Field(default=1, ge=0, le=100, description="Replicas kept running; 0 scales to zero")
    max_replicas: Annotated[
        int, FieldMeta("parameters", "Max replicas", serve="autoscaling_config")
    ] = Field(default=1, ge=1, le=100, description="Most replicas, at least min_replicas")
    scale_up_delay: Annotated[
        float,
        FieldMeta(
            "parameters",
            "Scale-up delay",
            serve="autoscaling_config",
            serve_key="upscale_delay_s",
            unit="s",
        ),
    ] = Field(
        default=30,
        ge=0,
        le=3600,
        description="Seconds the load must stay high before a replica is added",
    )
    scale_down_delay: Annotated[
        float,
        FieldMeta(
            "parameters",
            "Scale-down delay",
            serve="autoscaling_config",
            serve_key="downscale_delay_s",
            unit="s",
        ),
    ] = Field(
        default=600,
        ge=0,
        le=86400,
        description="Seconds the load must stay low before a replica is removed",
    )

    # Per-key limits: each key's own limits (`gale keys create/update`) override these.
    key_rpm: Annotated[
        int | None,
        FieldMeta("parameters", "Requests per minute per key", serve="user_config", asked=False),
    ] = Field(
        default=None, ge=1, description="Requests per minute each key may make; none: no limit"
    )
    key_tpm: Annotated[
        int | None,
        FieldMeta("parameters", "Tokens per minute per key", serve="user_config", asked=False),
    ] = Field(
        default=None,
        ge=1,
        description="Tokens (prompt + completion) per minute each key may use; none: no limit",
    )
    key_concurrency: Annotated[
        int | None,
        FieldMeta("parameters", "Concurrent requests per key", serve="user_config", asked=False),
    ] = Field(default=None, ge=1, description="Requests each key may have at once; none: no limit")
    key_token_budget: Annotated[
        int | None,
        FieldMeta("parameters", "Token budget per key", serve="user_config", asked=False),
    ] = Field(
        default=None,
        ge=1,
        description="Tokens (prompt + completion) each key may use in all; none: no limit",
    )
    key_limit_window: Annotated[
        int,
        FieldMeta("parameters", "Rate limit window", serve="user_config", unit="s", asked=False),
    ] = Field(
        default=60,
        ge=1,
        le=60,
        description="Seconds over which per-minute limits are counted; each window allows its "
        "share of the per-minute limit, so shorter windows smooth bursts",
    )

    # Hardware
    hardware: Annotated[str, FieldMeta("hardware", "Hardware", serve="args")] = Field(
        description="A hardware profile id (see `gale hardware`)"
    )
    engine: Annotated[
        Literal["auto", "transformers", "vllm", "llamacpp"],
        FieldMeta("hardware", "Engine", serve="args", asked=False),
    ] = Field(
        default="auto",
        description=(
            "The inference engine; auto is vLLM on GPU profiles, llama.cpp for GGUF models "
            "on CPU, transformers otherwise"
        ),
    )

    @field_validator("name", mode="before")
    @classmethod
    def _name_explained(cls, value: object) -> object:
        if isinstance(value, str) and not re.match(NAME_PATTERN, value):
            raise ValueError(f"'{value}' is not a valid name; use {NAME_RULE}")
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

    @field_validator("model_commit")
    @classmethod
    def _commit_of_hub_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if value is None or not model:
            return value
        ref = parse_model_ref(model)
        entry = ref.catalog_entry
        if ref.kind == "path" or (entry is not None and entry.source.repo is None):
            raise ValueError(f"'{model}' is not a Hugging Face repo: it has no commit to pin")
        written = ref.revision if entry is None else entry.source.revision
        if written and COMMIT.match(written) and written != value:
            raise ValueError(f"'{model}' names commit {written}, not {value}")
        return value

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
    def effective_engine(self) -> Literal["transformers", "vllm", "llamacpp"]:
        """The engine replicas run: `auto` is vLLM on GPU profiles, llama.cpp for a GGUF
        model on CPU ones, transformers otherwise (see docs/engines.md)."""
        if self.engine != "auto":
            return self.engine
        if self.profile.is_gpu:
            return "vllm"
        return "llamacpp" if self.model_ref.is_gguf else "transformers"

    @property
    def profile(self) -> catalog.HardwareProfile:
        """The hardware profile this spec names."""
        return catalog.hardware()[self.hardware]


def field_meta(field: str) -> FieldMeta:
    """The FieldMeta declared with a spec field."""
    found = [m for m in DeploymentSpec.model_fields[field].metadata if isinstance(m, FieldMeta)]
    return found[0]


def fields(*, group: str | None = None, serve: Place | None = None) -> tuple[str, ...]:
    """Spec fields in wizard, review and --help order, optionally of one group or place."""
    order = {g: i for i, g in enumerate(GROUPS)}
    found = [
        f
        for f in DeploymentSpec.model_fields
        if (group is None or field_meta(f).group == group)
        and (serve is None or field_meta(f).serve == serve)
    ]
    return tuple(sorted(found, key=lambda f: order[field_meta(f).group]))


def flag_of(field: str) -> str:
    """A field's command-line flag."""
    return field_meta(field).flag or "--" + field.replace("_", "-")


def serve_key(field: str) -> str:
    """A field's key in the part of the Serve config that keeps it."""
    return field_meta(field).serve_key or field


def range_text(field: str) -> str:
    """A field's bounds in words, read from its own constraints ('' if it has none)."""
    info = DeploymentSpec.model_fields[field]
    origin, args = get_origin(info.annotation), get_args(info.annotation)
    if origin is Literal:
        names = [str(a) for a in args]
        return ", ".join(names[:-1]) + f" or {names[-1]}"
    bounds = _bounds(info.metadata)
    if origin is list:
        words = f"up to {bounds['max_length']}" if "max_length" in bounds else ""
        each = _bounds(get_args(args[0])[1:]) if get_origin(args[0]) is Annotated else {}
        if each:
            words += f", each {_length_words(each)}"
        return words
    if info.annotation is str:
        return _length_words(bounds)
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']:g} to {bounds['le']:g}"
    return ", ".join(f"{_WORDS[key]} {value:g}" for key, value in bounds.items() if key in _WORDS)


def rule_text(field: str) -> str:
    """What a field is and its bounds, as one phrase (the flag's help and the README's rule)."""
    bounds = range_text(field)
    description = DeploymentSpec.model_fields[field].description or ""
    return f"{description} ({bounds})" if bounds else description


_WORDS = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}


def _bounds(metadata: Iterable[object]) -> dict[str, float]:
    keys = ("ge", "gt", "le", "lt", "min_length", "max_length")
    return {
        key: value
        for item in metadata
        for key in keys
        if (value := getattr(item, key, None)) is not None
    }


def _length_words(bounds: dict[str, float]) -> str:
    low, high = bounds.get("min_length"), bounds.get("max_length")
    if high is None:
        return ""
    return f"{low:g} to {high:g} characters" if low else f"up to {high:g} characters"


def spec_table() -> str:
    """The README's table of spec fields (Markdown): field, flag, meaning and bounds, default."""
    lines = ["| field | flag | meaning and bounds | default |", "| --- | --- | --- | --- |"]
    for field in fields():
        info = DeploymentSpec.model_fields[field]
        rule = rule_text(field).replace("|", "\\|")
        lines.append(f"| `{field}` | `{flag_of(field)}` | {rule} | {_default_text(info)} |")
    return "\n".join(lines) + "\n"


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, int | float):
        return f"{default:g}"
    return str(default) if default else ("none" if isinstance(default, list) else "empty")


REQUIRED: tuple[str, ...] = tuple(
    name for name, field in DeploymentSpec.model_fields.items() if field.is_required()
)

# Each field's command-line flag, for messages that tell a person what to change.
FLAGS: dict[str, str] = {field: flag_of(field) for field in DeploymentSpec.model_fields}
