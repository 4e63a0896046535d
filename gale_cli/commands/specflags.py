"""The spec's fields as command-line options, shared by `deploy` and `redeploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

GENERAL = "General details"
PARAMS = "Parameters"
HARDWARE = "Hardware"
CONTROL = "Behaviour"


def _opt(help_text: str, panel: str, *names: str) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_text, rich_help_panel=panel)


Model = Annotated[
    str | None, _opt("Catalog id, hf:ORG/NAME[@REVISION], or an absolute path.", GENERAL)
]
Name = Annotated[str | None, _opt("Deployment name: the endpoint path.", GENERAL)]
Description = Annotated[str | None, _opt("Up to 500 characters.", GENERAL)]
Tags = Annotated[list[str] | None, _opt("A tag (repeatable, up to 20).", GENERAL, "--tag")]
Engine = Annotated[str | None, _opt("auto, transformers or vllm.", HARDWARE)]
TrustRemoteCode = Annotated[
    bool | None,
    _opt("Run the model repository's own Python code.", GENERAL, "--trust-remote-code"),
]
Temperature = Annotated[float | None, _opt("0 to 2; 0 is greedy.", PARAMS)]
MaxLength = Annotated[int | None, _opt("Most tokens one request generates.", PARAMS)]
TopP = Annotated[float | None, _opt("Above 0, at most 1.", PARAMS)]
TopK = Annotated[int | None, _opt("At least 1.", PARAMS)]
Stop = Annotated[list[str] | None, _opt("A stop sequence (repeatable, up to 4).", PARAMS, "--stop")]
BatchSize = Annotated[int | None, _opt("Inference batch size, 1 to 256.", PARAMS)]
MinReplicas = Annotated[int | None, _opt("0 to 100; 0 scales to zero.", PARAMS)]
MaxReplicas = Annotated[int | None, _opt("1 to 100.", PARAMS)]
ScaleUpDelay = Annotated[float | None, _opt("Seconds, 0 to 3600.", PARAMS)]
ScaleDownDelay = Annotated[float | None, _opt("Seconds, 0 to 86400.", PARAMS)]
Hardware = Annotated[str | None, _opt("Hardware profile id (see `gale hardware`).", HARDWARE)]

File = Annotated[Path | None, _opt("A YAML spec file; flags override it.", CONTROL, "--file", "-f")]
AcceptTerms = Annotated[bool, _opt("Accept the terms and conditions.", CONTROL, "--accept-terms")]
DryRun = Annotated[bool, _opt("Stop after the review; deploy nothing.", CONTROL, "--dry-run")]
Json = Annotated[bool, _opt("Print one JSON object.", CONTROL, "--json")]
NoInput = Annotated[
    bool, _opt("Never prompt; a missing answer is an error.", CONTROL, "--no-input")
]
Force = Annotated[bool, _opt("Deploy even if the fit check fails.", CONTROL, "--force")]
Wait = Annotated[
    bool,
    _opt("Wait until it is Deployed (--no-wait returns at once).", CONTROL, "--wait/--no-wait"),
]
Timeout = Annotated[float, _opt("Seconds to wait for Deployed before giving up.", CONTROL)]
Yes = Annotated[bool, _opt("Do not ask to confirm.", CONTROL, "--yes", "-y")]

# Parameter name → spec field, for the spec options above.
SPEC_PARAMS = {
    "model": "model",
    "name": "name",
    "description": "description",
    "tag": "tags",
    "engine": "engine",
    "trust_remote_code": "trust_remote_code",
    "temperature": "temperature",
    "max_length": "max_length",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop",
    "batch_size": "batch_size",
    "min_replicas": "min_replicas",
    "max_replicas": "max_replicas",
    "scale_up_delay": "scale_up_delay",
    "scale_down_delay": "scale_down_delay",
    "hardware": "hardware",
}


def spec_values(params: dict[str, object]) -> dict[str, object]:
    """The spec fields among a command's parameters (pass `locals()` first thing)."""
    return {field: params[param] for param, field in SPEC_PARAMS.items() if param in params}
