"""The Ray Serve entry point (`serving.app:build_app`): one deployment per gale deployment.

Each replica loads the engine once, serves the OpenAI routes of `serving.api`
through a FastAPI app built after the engine is loaded, and applies the
deployment's `user_config` (keys, sampling defaults, batch size) in place.
This is the only gale module that imports ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from ray import serve
from ray.serve import Application

from serving import catalog, serve_config
from serving.spec import parse_model_ref

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.api import ServingState
    from serving.engines.base import Engine

# Serve's replica logger: lines land in the replica's log with its id.
logger = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    """The application's `args`: what needs new replicas when it changes."""

    model_config = ConfigDict(extra="forbid")

    model: str
    hardware: str
    engine: Literal["auto", "transformers", "vllm"] = "auto"
    trust_remote_code: bool = False
    max_num_seqs: int | None = None  # set for engines that size their batch at start (vLLM)

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        parse_model_ref(value)
        return value

    @field_validator("hardware")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in catalog.hardware():
            raise ValueError(f"unknown hardware profile '{value}'")
        return value


@serve.deployment(name=serve_config.DEPLOYMENT_NAME)
@serve.ingress()  # late-bound: __serve_build_asgi_app__ supplies the app after __init__
class GaleModel:
    """One replica: the loaded engine, the in-place state, and the OpenAI app in front."""

    # Serve awaits an async constructor (the ingress wrapper's own __init__ is async).
    async def __init__(  # type: ignore[misc]
        self,
        model: str,
        hardware: str,
        engine: str = "auto",
        trust_remote_code: bool = False,
        max_num_seqs: int | None = None,
    ) -> None:
        from serving.api import ServingState
        from serving.engines.factory import load_engine

        logger.info("gale: loading %s for hardware profile %s", model, hardware)
        # Off the replica's event loop: loading takes seconds to minutes, and the
        # actor should keep answering the controller meanwhile.
        self.engine: Engine = await asyncio.to_thread(
            load_engine,
            model,
            hardware,
            trust_remote_code,
            batch_size=max_num_seqs or 8,
            engine=engine,
        )
        # Filled in by reconfigure(), which Serve calls before the replica takes traffic.
        self.state: ServingState = ServingState(None, self.engine)
        logger.info(
            "gale: %s loaded on %s (pid %d, CUDA_VISIBLE_DEVICES=%s)",
            model,
            self.engine.device_description,
            os.getpid(),
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The OpenAI-compatible app over this replica's engine and state."""
        from serving.api import build_api

        return build_api(self.engine, self.state)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the deployment's user_config in place: keys, defaults, batch size."""
        self.state.update(user_config)
        logger.info(
            "gale: applied user_config (%d keys, batch size %d)",
            len(self.state.keys),
            self.state.parameters.batch_size,
        )

    async def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.close()


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder: validate `args` and bind the one deployment."""
    parsed = AppArgs.model_validate(args)
    # serve.deployment turns the class into a Deployment; mypy still sees the class.
    return GaleModel.bind(  # type: ignore[attr-defined]
        parsed.model,
        parsed.hardware,
        parsed.engine,
        parsed.trust_remote_code,
        parsed.max_num_seqs,
    )
