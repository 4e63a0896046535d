"""One replica without Ray: the args it starts with, its engine, and its in-place state.

`serving.deployment` wraps this in a Serve deployment. Each value takes one path: what
`AppArgs` holds is fixed for the replica's life (the engine is loaded from it);
what `user_config` holds is applied in place by `reconfigure`. The batch size
is in the args only for engines that size their batch at start (vLLM's
`max_num_seqs`); otherwise it comes from user_config alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from serving import catalog
from serving.health import Progress
from serving.replica_state import ServingState
from serving.spec import parse_model_ref

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.admission import Limiter
    from serving.engines.base import Engine
    from serving.metrics import Metrics


class AppArgs(BaseModel):
    """The application's `args`: what needs new replicas when it changes."""

    model_config = ConfigDict(extra="forbid")

    model: str
    hardware: str
    engine: Literal["auto", "transformers", "vllm", "llamacpp"] = "auto"
    trust_remote_code: bool = False
    model_commit: str | None = None  # the hub commit pinned at deploy time
    max_num_seqs: int | None = None  # for engines that size their batch at start (vLLM, llama.cpp)

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


class Replica:
    """A loaded engine and the user_config it serves under."""

    def __init__(self, args: AppArgs, engine: Engine, state: ServingState | None = None) -> None:
        self.args = args
        self.engine = engine
        self.state = state if state is not None else ServingState()
        self.progress = Progress()
        self._probe: list[int] = []

    @classmethod
    def load(cls, args: AppArgs) -> Replica:
        """Load the engine `args` name (blocking; may take minutes)."""
        from serving import startup
        from serving.engines.factory import load_engine

        engine = load_engine(
            args.model,
            args.hardware,
            args.trust_remote_code,
            batch_size=args.max_num_seqs,
            engine=args.engine,
            model_commit=args.model_commit,
            progress=startup.progress_callback(),
        )
        return cls(args, engine)

    async def warm_up(self) -> None:
        """One short generation, so the first request pays none of the engine's first-run costs."""
        from serving.engines.base import SamplingParams

        self._probe = self.engine.encode_text("Hello")
        await self.engine.generate(self._probe, SamplingParams(max_tokens=1))

    async def check_health(self) -> None:
        """Return when the engine generates; raise EngineUnhealthy saying why it does not."""
        from serving.health import check_engine

        await check_engine(self.engine, self.progress, self._probe or [0])

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Apply a user_config in place; nothing changes if any part of it is invalid."""
        self.state.update(user_config)
        if self.args.max_num_seqs is None:  # else the engine was sized at start, from args
            self.engine.set_batch_size(self.state.parameters.batch_size)

    def api(self, metrics: Metrics | None = None, limiter: Limiter | None = None) -> FastAPI:
        """The OpenAI-compatible app over this replica's engine and state, recording to `metrics`.

        With a `limiter`, per-key limits are enforced and usage is counted.
        """
        from serving.api import build_api

        return build_api(self.engine, self.state, metrics, limiter, self.progress)
