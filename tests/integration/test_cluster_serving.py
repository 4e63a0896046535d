"""The real path: a local Ray head started by gale, the bundled model, the official openai SDK."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from devstack import eventually
from gale_cli.cluster import ServeClient
from gale_cli.connection import ClusterConfig
from gale_cli.errors import AuthError
from serving import cores
from serving.keys import generate_key
from serving.serve_config import INGRESS_NAME, model_status
from tests.conftest import Deployed

pytestmark = pytest.mark.cluster
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
FOREIGN = {
    "name": "foreign",
    "route_prefix": "/foreign",
    "import_path": "tests.integration.foreign_app:app",
    # The replica imports the test module from this checkout, not an installed package.
    "runtime_env": {"env_vars": {"PYTHONPATH": str(Path(__file__).parents[2])}},
}


def sdk(deployed: Deployed, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=deployed.base_url, api_key=key or deployed.key, max_retries=0)


def replica_pids(client: ServeClient, name: str) -> set[int]:
    app = client.get_application(name) or {}
    return {
        replica["pid"]
        for replica in model_status(app).get("replicas", [])
        if replica["state"] == "RUNNING"
    }


def test_dashboard_refuses_requests_without_the_token(ray_cluster: ServeClient) -> None:
    url = ray_cluster.config.dashboard_url + "/api/serve/applications/"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer " + "0" * 64})
    assert wrong.status_code == 403
    impostor = ClusterConfig(ray_cluster.config.dashboard_url, token="0" * 64, token_source="test")
    with ServeClient(impostor) as client, pytest.raises(AuthError):
        client.get_applications()
    assert ray_cluster.get_applications()["http_options"]["host"] == "127.0.0.1"


@pytest.mark.model
def test_chat_answers_paris(bundled_model: Deployed) -> None:
    reply = sdk(bundled_model).chat.completions.create(
        model=bundled_model.name, messages=QUESTION, max_tokens=24
    )
    assert "Paris" in (reply.choices[0].message.content or "")


@pytest.mark.model
def test_chat_streams(bundled_model: Deployed) -> None:
    stream = sdk(bundled_model).chat.completions.create(
        model=bundled_model.name, messages=QUESTION, max_tokens=24, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1
    assert "Paris" in "".join(pieces)


@pytest.mark.model
def test_lists_the_model(bundled_model: Deployed) -> None:
    ids = [model.id for model in sdk(bundled_model).models.list()]
    assert ids == [bundled_model.name]


@pytest.mark.model
def test_wrong_key_is_refused(bundled_model: Deployed) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(bundled_model, key="gale-not-a-real-key").models.list()


@pytest.mark.model
def test_removed_key_is_refused_within_seconds_without_restart(bundled_model: Deployed) -> None:
    client = bundled_model.client
    pids = replica_pids(client, bundled_model.name)
    extra_key, extra = generate_key("temporary")
    bundled_model.apply([bundled_model.record, extra])
    eventually(lambda: _works(bundled_model, extra_key), 10, "the new key opening the endpoint")

    bundled_model.apply([bundled_model.record])
    started = time.monotonic()
    eventually(lambda: not _works(bundled_model, extra_key), 5, "the removed key refused")
    print(f"\nremoved key refused after {time.monotonic() - started:.2f}s")
    assert _works(bundled_model, bundled_model.key)
    assert replica_pids(client, bundled_model.name) == pids


def _works(deployed: Deployed, key: str) -> bool:
    try:
        sdk(deployed, key).models.list()
    except openai.AuthenticationError:
        return False
    return True


@pytest.mark.model
def test_foreign_app_survives_gales_apply(bundled_model: Deployed) -> None:
    client = bundled_model.client
    others = [
        app["deployed_app_config"]
        for app in client.get_applications()["applications"].values()
        if app.get("deployed_app_config")
    ]
    client.put_applications([*others, FOREIGN])  # as another tool would: not through gale
    try:
        client.wait_for_application("foreign", 120, poll_interval=0.2)
        before = httpx.get(client.config.serve_url + "/foreign").json()

        applied = bundled_model.apply([bundled_model.record])
        client.wait_for_application(bundled_model.name, 120, since=applied.previous_deploy_time)

        foreign = client.get_application("foreign")
        assert foreign is not None and foreign["status"] == "RUNNING"
        assert httpx.get(client.config.serve_url + "/foreign").json() == before
        assert _works(bundled_model, bundled_model.key)
    finally:
        client.remove_application("foreign")
        client.wait_for_removal("foreign", 60, poll_interval=0.2)


@pytest.mark.model
def test_ray_keeps_to_one_core_and_the_model_replica_takes_them_all(
    bundled_model: Deployed,
) -> None:
    machine = cores.caller_cores()
    if len(machine) < 2:
        pytest.skip("one core: nothing to set apart")
    app = bundled_model.client.get_application(bundled_model.name) or {}
    ingress = app["deployments"][INGRESS_NAME]["replicas"]
    assert ingress and all(
        os.sched_getaffinity(r["pid"]) == {cores.control_core(machine)} for r in ingress
    )
    models = replica_pids(bundled_model.client, bundled_model.name)
    assert models and all(os.sched_getaffinity(pid) == machine for pid in models)
