"""Spec ⇄ Ray Serve application config: two pure functions and the rules between them.

Where each part of the spec lives decides what a change costs (README, "How a spec becomes
a Serve application"):

- `args`: what needs new replicas (the model, its code, the hardware, the engine
  and, for vLLM, the batch size). A change here is a rolling replacement. The
  replica reads them as one `serving.replica.AppArgs`.
- the model deployment's (`GaleModel`, `deployments[0]`) `user_config`: what a
  replica applies in place through `reconfigure()`: general details, sampling
  defaults, batch size, API key hashes.
- its `autoscaling_config`: replica bounds and delays, also in place.

The second deployment, `GaleIngress` (`serving.ingress`), owns the route and relays
requests to the model's replicas; nothing of the spec lives there. Readers of a
live application find the model by name (`model_config`, `model_status`):
applications deployed before the ingress existed hold the model alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from serving.catalog import GIB
from serving.keys import KeyRecord
from serving.spec import DeploymentSpec, Place, field_meta, fields, serve_key

IMPORT_PATH = "serving.app:build_app"
DEPLOYMENT_NAME = "GaleModel"
INGRESS_NAME = "GaleIngress"
# The ingress holds every request in flight to the model's replicas (each bounded by their
# own max_ongoing_requests and max_queued_requests): enough for any number of them.
INGRESS_MAX_ONGOING = 4096
# The relay never blocks its event loop, so Serve runs it and the handle's router on the
# replica's own loop: no hand-over between threads on each request and each reply.
INGRESS_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
# Ray's resource of the head node: the ingress lives there, so losing a worker node
# never takes the route down; a tiny amount, so it never holds up placement.
HEAD_RESOURCE = "node:__internal_head__"

# Where each spec field lives is declared with the field (`FieldMeta.serve`); these are the
# sampling defaults and batch size a replica takes from user_config's `parameters`.
SAMPLING_FIELDS = fields(serve="parameters")


def route_prefix(name: str) -> str:
    """The stable endpoint path of a deployment."""
    return f"/{name}"


def to_serve_application(
    spec: DeploymentSpec, api_keys: list[KeyRecord] | tuple[KeyRecord, ...] = ()
) -> dict[str, Any]:
    """The Ray Serve application config (Ray's own field names) that deploys `spec`."""
    profile = spec.profile
    actor_options: dict[str, Any] = {
        "num_cpus": profile.cpus,
        "memory": int(profile.memory_gb * GIB),
    }
    if profile.is_gpu:
        actor_options["num_gpus"] = profile.gpus
        actor_options["accelerator_type"] = profile.accelerator_type
    batch = spec.batch_size
    return {
        "name": spec.name,
        "route_prefix": route_prefix(spec.name),
        "import_path": IMPORT_PATH,
        "args": engine_args(spec),
        "deployments": [
            {
                "name": DEPLOYMENT_NAME,
                "autoscaling_config": {
                    **_kept_at("autoscaling_config", spec),
                    # Start with one replica even when scaling to zero is allowed, so a
                    # deploy proves the model loads; idle replicas then go away.
                    "initial_replicas": max(spec.min_replicas, 1),
                    # A replica is busy when it holds a full batch.
                    "target_ongoing_requests": batch,
                    # React to load within seconds: Serve's defaults average over 30 s.
                    "metrics_interval_s": 2,
                    "look_back_period_s": 10,
                },
                # Room for one batch running and the next one filling.
                "max_ongoing_requests": 2 * batch,
                # Bounded queue: overload answers 503 with Retry-After, never grows without end.
                "max_queued_requests": max(16, 4 * batch),
                "backpressure_config": {"status_code": 503, "retry_after_s": 1},
                # Let a replacement start before the old replica stops: no gap with one replica.
                "max_surge_percent": 25,
                "graceful_shutdown_timeout_s": 60,
                # The replica logs each request itself (method, path, status): Serve's line
                # would name only the call from the ingress.
                "logging_config": {"enable_access_log": False},
                "ray_actor_options": actor_options,
                "user_config": {
                    **_kept_at("user_config", spec),
                    "parameters": _kept_at("parameters", spec),
                    "api_keys": [record.stored() for record in api_keys],
                },
            },
            ingress_config(),
        ],
    }


def ingress_config() -> dict[str, Any]:
    """The ingress deployment's options: one replica, no CPU of its own, on the head node.

    One replica: it only relays bytes (one event loop answers thousands of requests a
    second, far beyond what the model's replicas generate); it never scales to zero,
    so it holds requests while the model scales up from zero.
    """
    return {
        "name": INGRESS_NAME,
        "num_replicas": 1,
        "max_ongoing_requests": INGRESS_MAX_ONGOING,
        # Requests in flight finish through a rolling replacement of the ingress itself.
        "graceful_shutdown_timeout_s": 60,
        "ray_actor_options": {
            "num_cpus": 0,
            "resources": {HEAD_RESOURCE: 0.001},
            "runtime_env": {"env_vars": INGRESS_ENV},
        },
    }


def model_config(app: dict[str, Any]) -> dict[str, Any]:
    """The model deployment's entry in an application config (by name; first if unnamed)."""
    deployments = app.get("deployments") or []
    for deployment in deployments:
        if deployment.get("name") == DEPLOYMENT_NAME:
            return dict(deployment)
    return dict(deployments[0]) if deployments else {}


def model_status(app: Mapping[str, Any]) -> dict[str, Any]:
    """The model deployment's entry in an application's status (Serve's `deployments` map)."""
    return dict((app.get("deployments") or {}).get(DEPLOYMENT_NAME) or {})


def engine_args(spec: DeploymentSpec) -> dict[str, Any]:
    """The `args`: what the engine is started with (`serving.replica.AppArgs` reads them).

    vLLM and llama.cpp size their batch at start-up (`max_num_seqs`, llama-server's
    slots), so for them the batch size is here, a change replaces replicas, and the
    replica leaves the user_config's copy to the state; the transformers engine
    takes it from user_config alone.
    """
    args = _kept_at("args", spec)
    if spec.effective_engine in ("vllm", "llamacpp"):
        args["max_num_seqs"] = spec.batch_size
    return args


def from_serve_application(app: dict[str, Any]) -> tuple[DeploymentSpec, list[KeyRecord]]:
    """Rebuild the spec and key records from an application config `to_serve_application` made."""
    deployment = model_config(app)
    user_config = deployment["user_config"]
    places: dict[Place, dict[str, Any]] = {
        "args": app["args"],
        "user_config": user_config,
        "parameters": user_config["parameters"],
        "autoscaling_config": deployment["autoscaling_config"],
    }
    values = {}
    for field in DeploymentSpec.model_fields:
        place, key = places[field_meta(field).serve], serve_key(field)
        if key in place:  # a field added since this application was deployed keeps its default
            values[field] = place[key]
    spec = DeploymentSpec.model_validate(values)
    keys = [KeyRecord.model_validate(row) for row in user_config.get("api_keys", [])]
    return spec, keys


def _kept_at(place: Place, spec: DeploymentSpec) -> dict[str, Any]:
    """The spec's fields that Serve's config keeps at `place`, under their keys there."""
    return {serve_key(field): getattr(spec, field) for field in fields(serve=place)}


def is_gale_application(app: dict[str, Any]) -> bool:
    """Whether an application in the cluster's config was deployed by gale."""
    return app.get("import_path") == IMPORT_PATH


def change_kind(old: DeploymentSpec, new: DeploymentSpec) -> str:
    """'in-place' when only user_config/autoscaling change, else 'rolling'."""
    return "rolling" if engine_args(old) != engine_args(new) else "in-place"


def replicas_per_hour_cost(spec: DeploymentSpec) -> tuple[float, float]:
    """Cost per hour at min and at max replicas."""
    price = spec.profile.price_per_hour
    return (
        math.floor(price * spec.min_replicas * 1000 + 0.5) / 1000,
        math.floor(price * spec.max_replicas * 1000 + 0.5) / 1000,
    )
