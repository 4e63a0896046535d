"""The model's Ray Serve deployment, one per gale deployment (entry point `serving.app:build_app`).

Each replica loads the engine once from the bound `AppArgs`, serves the OpenAI
routes of `serving.api` through a FastAPI app built after the engine is loaded,
and applies the deployment's `user_config` (keys, sampling defaults, batch
size) in place; `serving.replica` does both without Ray. Requests reach the app
through `forward`, called by the application's ingress (`serving.ingress`),
which owns the route. Each replica records its requests through
`serving.ray_metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from serving import cores, metrics, relay, serve_config, startup
from serving.activity import sample_activity
from serving.admission import Limiter
from serving.ingress import GaleIngress
from serving.ledger_actor import RayLedger
from serving.metrics import NoMetrics
from serving.ray_metrics import RayEngineGauges, RayMetrics
from serving.replica import AppArgs, Replica

# Serve's replica logger: lines land in the replica's log with its id.
logger = logging.getLogger("ray.serve")


@serve.deployment(name=serve_config.DEPLOYMENT_NAME)
class GaleModel:
    """One replica: the loaded engine, the in-place state, and the OpenAI app in front."""

    # Serve awaits an async constructor (the ingress wrapper's own __init__ is async).
    async def __init__(self, args: AppArgs) -> None:  # type: ignore[misc]
        # Phases go to a file beside this replica's log, which the CLI reads (serving.startup).
        reporter = startup.begin(startup.Reporter(startup.open_beside(logger.handlers)))
        # On a local head, every core the machine gives gale, not only Ray's own one.
        taken = cores.take_engine_cores()
        if taken:
            logger.info("gale: the engine runs on cores %s", cores.format_cores(taken))
        logger.info("gale: loading %s for hardware profile %s", args.model, args.hardware)
        reporter.report(startup.LOADING, model=args.model, hardware=args.hardware)
        try:
            # Off the replica's event loop: loading takes seconds to minutes, and the
            # actor should keep answering the controller meanwhile. Serve calls
            # reconfigure() with the user_config before the replica takes traffic.
            self.replica = await asyncio.to_thread(Replica.load, args)
            reporter.report(startup.WARMING_UP)
            await self.replica.warm_up()
            # Per-key limits and usage: shared with the other replicas through the ledger actor.
            context = serve.get_replica_context()
            ledger = await asyncio.to_thread(RayLedger.for_application, context.app_name)
            self.limiter = Limiter(
                self.replica.state, ledger, context.replica_id.unique_id, args.hardware
            )
            self.limiter.start()
        except BaseException as error:
            logger.exception("gale: the replica failed to start while %s", reporter.failed(error))
            raise
        # The OpenAI-compatible app over this replica's engine and state.
        self.app = self.replica.api(
            RayMetrics() if metrics.enabled() else NoMetrics(), self.limiter
        )
        reporter.report(startup.READY, device=self.replica.engine.device_description)
        self._sampler = None
        if metrics.enabled():
            self._sampler = asyncio.get_running_loop().create_task(
                sample_activity(
                    self.replica.engine, lambda: self.replica.state.name, RayEngineGauges()
                )
            )
        logger.info(
            "gale: %s loaded on %s (pid %d, CUDA_VISIBLE_DEVICES=%s)",
            args.model,
            self.replica.engine.device_description,
            os.getpid(),
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        )

    async def forward(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[relay.Item]:
        """Answer one HTTP request the ingress relays: its head, then body chunks (a stream).

        Logs the request as Serve's access log would for an HTTP request (the model's own
        access log, which would name only `forward`, is off in its config).
        """
        started, status = time.perf_counter(), "CANCELLED"
        try:
            async for item in relay.respond(self.app, scope, body):
                if isinstance(item, relay.Head):
                    status = str(item.status)
                yield item
        except Exception:
            status = "ERROR"
            raise
        finally:
            took_ms = (time.perf_counter() - started) * 1000
            logger.info("%s %s %s %.1fms", scope.get("method"), scope.get("path"), status, took_ms)

    async def answer(self, scope: dict[str, Any], body: bytes) -> relay.Head:
        """Answer one request that does not stream, whole: one reply instead of a stream."""
        return await relay.whole(self.forward(scope, body))

    async def check_health(self) -> None:
        """Serve's health check (every 10 s): the engine must still generate (serving.health)."""
        try:
            await self.replica.check_health()
        except Exception as error:
            logger.error("gale: health check failed: %s", error)
            raise

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the deployment's user_config in place: keys, defaults, batch size."""
        self.replica.reconfigure(user_config)
        logger.info(
            "gale: applied user_config (%d keys, batch size %d)",
            len(self.replica.state.keys),
            self.replica.engine.batch_size,
        )

    async def __del__(self) -> None:
        sampler = getattr(self, "_sampler", None)
        if sampler is not None:
            sampler.cancel()
        replica = getattr(self, "replica", None)
        if replica is not None:
            await replica.engine.close()


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder: validate `args`, bind the model to them, the ingress to it."""
    # serve.deployment turns the classes into Deployments; mypy still sees the classes.
    model = GaleModel.bind(AppArgs.model_validate(args))  # type: ignore[attr-defined]
    return GaleIngress.bind(model)  # type: ignore[attr-defined,no-any-return]
