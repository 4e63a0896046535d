"""The vLLM engine in a real Serve replica: the bundled model on the `cpu` profile.

One deployment for the module (vLLM's CPU build takes about 90 s to start), on
the session's Ray head. Batch size 1 (so vLLM's max_num_seqs is 1): a stream
the client abandons must be aborted in vLLM, or the next request would wait
behind it for thousands of tokens.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from devstack import BUNDLED_MODEL, eventually
from gale_cli.cluster import ServeClient
from serving.keys import generate_key
from serving.serve_config import model_status, to_serve_application
from serving.spec import DeploymentSpec
from tests.conftest import DEPLOY_TIMEOUT_S, Deployed
from tests.integration.real_clients import CHECKS

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.model,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a very long story about the sea and its ships."}]


@pytest.fixture(scope="module")
def vllm_model(ray_cluster: ServeClient) -> Iterator[Deployed]:
    """The bundled model with engine=vllm, deployed once for this module, removed after."""
    spec = DeploymentSpec(
        name="smol-vllm",
        model=BUNDLED_MODEL,
        hardware="cpu",
        engine="vllm",
        temperature=0,
        max_length=4000,
        batch_size=1,
    )
    key, record = generate_key("tests")
    started = time.monotonic()
    applied = ray_cluster.apply_application(to_serve_application(spec, [record]))
    try:
        ray_cluster.wait_for_application(
            spec.name, DEPLOY_TIMEOUT_S, since=applied.previous_deploy_time
        )
        print(f"\n{spec.name}: PUT → RUNNING in {time.monotonic() - started:.1f}s")
        yield Deployed(
            spec, key, record, ray_cluster.config.serve_url + f"/{spec.name}/v1", ray_cluster
        )
    finally:
        ray_cluster.remove_application(spec.name)
        ray_cluster.wait_for_removal(spec.name, 120, poll_interval=0.5)


def sdk(deployed: Deployed) -> openai.OpenAI:
    return openai.OpenAI(base_url=deployed.base_url, api_key=deployed.key, max_retries=0)


def replica_pids(deployed: Deployed) -> set[int]:
    app = deployed.client.get_application(deployed.name) or {}
    return {
        replica["pid"]
        for replica in model_status(app).get("replicas", [])
        if replica["state"] == "RUNNING"
    }


def test_vllm_replica_answers_paris(vllm_model: Deployed) -> None:
    health = httpx.get(vllm_model.base_url.removesuffix("/v1") + "/health", timeout=30).json()
    assert "vLLM" in health["device"] and health["batch_size"] == 1
    reply = sdk(vllm_model).chat.completions.create(
        model=vllm_model.name, messages=QUESTION, max_tokens=24
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"


def test_vllm_replica_streams(vllm_model: Deployed) -> None:
    stream = sdk(vllm_model).chat.completions.create(
        model=vllm_model.name, messages=QUESTION, max_tokens=24, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1
    assert "Paris" in "".join(pieces)


def test_cancelled_stream_frees_its_slot(vllm_model: Deployed) -> None:
    client = sdk(vllm_model)
    stream = client.chat.completions.create(
        model=vllm_model.name, messages=STORY, max_tokens=4000, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()  # the client goes away after its first words
    # With one slot, this waits behind the abandoned request unless it was aborted
    # (4000 tokens at about 30 tokens/s would take minutes).
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=vllm_model.name, messages=QUESTION, max_tokens=8, timeout=60
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 8
    assert time.monotonic() - started < 30


def test_redeploy_in_place_under_load(vllm_model: Deployed) -> None:
    pids = replica_pids(vllm_model)
    assert len(pids) == 1
    results: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(
            base_url=vllm_model.base_url,
            headers={"Authorization": f"Bearer {vllm_model.key}"},
            timeout=60,
        ) as http:
            for _ in range(200):  # bounded, and ended early by `stop`
                if stop.is_set():
                    return
                try:
                    body = {"messages": QUESTION, "max_tokens": 6}
                    results.append(http.post("/chat/completions", json=body).status_code)
                except httpx.HTTPError as error:
                    results.append(type(error).__name__)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        eventually(lambda: len(results) >= 5, 60, "requests flowing before the redeploy")
        warmer = vllm_model.spec.model_copy(update={"temperature": 0.7})
        applied = vllm_model.client.apply_application(
            to_serve_application(warmer, [vllm_model.record])
        )
        vllm_model.client.wait_for_application(
            vllm_model.name, 120, since=applied.previous_deploy_time, poll_interval=0.2
        )
        settled = len(results)
        eventually(lambda: len(results) >= settled + 5, 60, "requests after the redeploy")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    assert results and all(status == 200 for status in results), results
    assert replica_pids(vllm_model) == pids  # applied in place: the same replica


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_real_client_on_vllm(vllm_model: Deployed, check: Callable[[str, str, str], None]) -> None:
    check(vllm_model.base_url, vllm_model.key, vllm_model.name)
