"""Exports are what Ray and KubeRay accept."""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gale_cli import export
from serving.keys import generate_key
from serving.spec import DeploymentSpec

SPEC = DeploymentSpec(
    name="support-bot",
    model="llama-3.1-8b-instruct",
    hardware="a10-x4",
    min_replicas=1,
    max_replicas=3,
)


def test_serve_config_passes_rays_own_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    _, record = generate_key()
    document = yaml.safe_load(export.dump(export.serve_config(SPEC, [record])))
    schema = ServeDeploySchema.model_validate(document)
    (app,) = schema.applications
    assert app.name == "support-bot" and app.route_prefix == "/support-bot"
    assert app.deployments[0].ray_actor_options.num_gpus == 4


def test_rayservice_manifest_carries_the_serve_config_and_gpu_workers() -> None:
    manifest = yaml.safe_load(export.dump(export.rayservice(SPEC, [])))
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve["applications"][0]["import_path"] == "serving.app:build_app"
    (workers,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 3)
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "4"
    assert json.loads(workers["rayStartParams"]["resources"]) == {"accelerator_type:A10G": 4}
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == export.RAY_VERSION
    assert workers["template"]["spec"]["containers"][0]["image"] == export.RAY_IMAGE


def test_the_exported_ray_version_is_the_one_gale_pins() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [dep for dep in pyproject["project"]["optional-dependencies"]["serve"] if "ray" in dep]
    assert pins == [f"ray[serve]=={export.RAY_VERSION}"]
    assert f":{export.RAY_VERSION}-" in export.RAY_IMAGE


CRD = Path(__file__).parent.parent / "data" / "kuberay" / "ray.io_rayservices.yaml"


@functools.cache
def _rayservice_schema() -> dict:
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("hardware", ["cpu", "a10-x4"])
def test_rayservice_manifest_passes_kuberays_crd_schema(hardware: str) -> None:
    spec = SPEC.model_copy(update={"hardware": hardware})
    _, record = generate_key()
    manifest = yaml.safe_load(export.dump(export.rayservice(spec, [record])))
    jsonschema.validate(manifest, _rayservice_schema())


def test_rayservice_uses_token_auth_from_a_secret_and_keeps_the_dashboard_inside() -> None:
    text = export.dump(export.rayservice(SPEC, []))
    manifest = yaml.safe_load(text)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "support-bot-ray-token"}
    head = cluster["headGroupSpec"]
    assert "0.0.0.0" not in json.dumps(head["rayStartParams"])
    (public,) = manifest["spec"]["serveService"]["spec"]["ports"]
    assert public["port"] == 8000
    assert "RAY_AUTH_TOKEN" not in text  # the token is never in the manifest
    assert "kubectl create secret generic support-bot-ray-token" in text


@pytest.mark.parametrize("build", [export.serve_config, export.rayservice])
def test_an_export_says_it_is_a_snapshot_of_the_keys(build: Any) -> None:
    text = export.dump(build(SPEC, []))
    assert text.startswith("# A snapshot")
    assert "export again after each key change" in text


def test_a_hub_model_reads_its_hf_token_from_a_secret_never_the_manifest() -> None:
    pinned = SPEC.model_copy(update={"model_commit": "ab" * 20})
    text = export.dump(export.rayservice(pinned, []))
    manifest = yaml.safe_load(text)
    (workers,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (env,) = workers["template"]["spec"]["containers"][0]["env"]
    assert env["name"] == "HF_TOKEN"
    assert env["valueFrom"]["secretKeyRef"]["name"] == "support-bot-hf-token"
    assert "kubectl create secret generic support-bot-hf-token" in text
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve["applications"][0]["args"]["model_commit"] == "ab" * 20
    assert "HF_TOKEN" not in manifest["spec"]["serveConfigV2"]
    bundled = SPEC.model_copy(update={"model": "smollm2-135m-instruct", "hardware": "cpu"})
    local = yaml.safe_load(export.dump(export.rayservice(bundled, [])))
    containers = local["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "env" not in containers["containers"][0]
