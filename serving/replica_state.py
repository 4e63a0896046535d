"""What a replica may change in place: general details, sampling defaults, batch size, keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, create_model

from serving.keys import KeyRecord
from serving.serve_config import SAMPLING_FIELDS
from serving.spec import DeploymentSpec

# The deployment's default per-key limits (user_config), for keys that set none.
KEY_LIMIT_FIELDS = (
    "key_rpm",
    "key_tpm",
    "key_concurrency",
    "key_token_budget",
    "key_limit_window",
)
# The spec's own field rules (bounds, defaults), so the server never drifts from the CLI.
Parameters = create_model(  # type: ignore[call-overload]
    "Parameters",
    __config__=ConfigDict(extra="ignore"),
    __doc__="Sampling defaults and limits of a deployment (the spec's parameters step).",
    **{
        field: (DeploymentSpec.model_fields[field].annotation, DeploymentSpec.model_fields[field])
        for field in SAMPLING_FIELDS
    },
)

KeyDefaults = create_model(  # type: ignore[call-overload]
    "KeyDefaults",
    __config__=ConfigDict(extra="ignore"),
    __doc__="The deployment's per-key limits, for keys that set none of their own.",
    **{
        field: (DeploymentSpec.model_fields[field].annotation, DeploymentSpec.model_fields[field])
        for field in KEY_LIMIT_FIELDS
    },
)


class ServingState:
    """A replica's user_config as data: general details, defaults, batch size, key hashes."""

    def __init__(self, user_config: Mapping[str, Any] | None = None) -> None:
        self.name = "model"
        self.description = ""
        self.tags: list[str] = []
        self.parameters = Parameters()
        self.keys: tuple[KeyRecord, ...] = ()
        self.key_limits = KeyDefaults()
        self.update(user_config or {})

    def update(self, user_config: Mapping[str, Any]) -> None:
        """Apply a new user_config; nothing changes if any part of it is invalid."""
        parameters = Parameters.model_validate(user_config.get("parameters", {}))
        keys = tuple(KeyRecord.model_validate(row) for row in user_config.get("api_keys", []))
        key_limits = KeyDefaults.model_validate(user_config)
        self.name = str(user_config.get("name", self.name))
        self.description = str(user_config.get("description", ""))
        self.tags = list(user_config.get("tags", []))
        self.parameters, self.keys, self.key_limits = parameters, keys, key_limits
