"""Exports for GitOps: a Serve config `serve deploy` accepts, or a KubeRay RayService manifest."""

from __future__ import annotations

import json
from typing import Any

import yaml

from serving.keys import KeyRecord
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec

# The Ray that pyproject.toml pins for gale[serve]; a unit test holds the two together.
RAY_VERSION = "2.60.0"
RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311"
SNAPSHOT_NOTE = (
    "A snapshot: the API key hashes are those of the moment of export. Keys created, "
    "revoked or expired later with `gale keys` do not reach a cluster this is applied to; "
    "export again after each key change."
)


def token_secret(name: str) -> str:
    """The Kubernetes Secret a RayService export reads its Ray token from."""
    return f"{name}-ray-token"


def hf_token_secret(name: str) -> str:
    """The Kubernetes Secret a RayService export reads its Hugging Face token from."""
    return f"{name}-hf-token"


def _hub_model(spec: DeploymentSpec) -> bool:
    ref = spec.model_ref
    entry = ref.catalog_entry
    return ref.kind == "hf" or (entry is not None and entry.source.repo is not None)


def serve_config(spec: DeploymentSpec, keys: list[KeyRecord]) -> dict[str, Any]:
    """A Serve config file holding this one application."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [to_serve_application(spec, keys)],
    }


def rayservice(
    spec: DeploymentSpec, keys: list[KeyRecord], image: str = RAY_IMAGE
) -> dict[str, Any]:
    """A KubeRay RayService: the Serve config plus a cluster whose workers fit one replica each."""
    profile = spec.profile
    worker_limits: dict[str, Any] = {
        "cpu": str(profile.cpus),
        "memory": f"{int(profile.memory_gb)}Gi",
    }
    ray_resources = {}
    if profile.is_gpu:
        worker_limits["nvidia.com/gpu"] = str(profile.gpus)
        ray_resources[f"accelerator_type:{profile.accelerator_type}"] = profile.gpus
    worker_params: dict[str, Any] = {}
    if ray_resources:
        worker_params["resources"] = json.dumps(ray_resources)
    container: dict[str, Any] = {
        "name": "ray-worker",
        "image": image,
        "resources": {"limits": worker_limits, "requests": worker_limits},
    }
    if _hub_model(spec):
        # Replicas download from the Hub with the token in their node's environment, read
        # from a Secret: never in the Serve config, which the dashboard shows. Optional,
        # so a public repo needs no Secret.
        container["env"] = [
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": hf_token_secret(spec.name),
                        "key": "token",
                        "optional": True,
                    }
                },
            }
        ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": spec.name,
            "labels": {"app.kubernetes.io/managed-by": "gale"},
            "annotations": {"gale/snapshot": SNAPSHOT_NOTE},
        },
        "spec": {
            # Only Serve's port goes in the public Service; the dashboard stays inside.
            "serveService": {
                "spec": {"ports": [{"name": "serve", "port": 8000, "targetPort": 8000}]}
            },
            "serveConfigV2": yaml.safe_dump(
                {"applications": [to_serve_application(spec, keys)]}, sort_keys=False
            ),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # The dashboard's jobs API runs code: Ray token authentication, with the
                # token from a Secret the operator creates and never in this manifest.
                "authOptions": {"mode": "token", "secretName": token_secret(spec.name)},
                "headGroupSpec": {
                    # Reachable in the cluster (the operator deploys through it), never
                    # published: the head's ClusterIP Service, not the serve Service.
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "resources": {"limits": {"cpu": "2", "memory": "8Gi"}},
                                    "ports": [
                                        {"containerPort": 6379, "name": "gcs"},
                                        {"containerPort": 8265, "name": "dashboard"},
                                        {"containerPort": 8000, "name": "serve"},
                                    ],
                                }
                            ]
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": f"{profile.id}-workers",
                        "replicas": spec.min_replicas,
                        "minReplicas": spec.min_replicas,
                        "maxReplicas": spec.max_replicas,
                        "rayStartParams": worker_params,
                        "template": {"spec": {"containers": [container]}},
                    }
                ],
                "enableInTreeAutoscaling": True,
            },
        },
    }


def dump(document: dict[str, Any]) -> str:
    """YAML text of an export, headed by what it does not follow (keys change later)."""
    lines = [f"# {SNAPSHOT_NOTE}"]
    if document.get("kind") == "RayService":
        secret = token_secret(document["metadata"]["name"])
        lines.append(
            f"# Create the Ray token Secret first: kubectl create secret generic {secret} "
            '--from-literal=auth_token="$(openssl rand -hex 32)"'
        )
        containers = document["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
        if any("env" in c for c in containers["spec"]["containers"]):
            hf_secret = hf_token_secret(document["metadata"]["name"])
            lines.append(
                f"# For a gated or private Hub model: kubectl create secret generic {hf_secret} "
                '--from-literal=token="$HF_TOKEN"'
            )
    return "\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False)
