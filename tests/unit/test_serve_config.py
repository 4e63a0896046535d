"""Spec ⇄ Serve application config: the round trip and where each field lives."""

from __future__ import annotations

import pytest

from serving.fit import check_fit
from serving.keys import generate_key
from serving.serve_config import (
    HEAD_RESOURCE,
    change_kind,
    from_serve_application,
    model_config,
    model_status,
    replicas_per_hour_cost,
    to_serve_application,
)
from serving.spec import DeploymentSpec

FULL = DeploymentSpec(
    name="chat-prod",
    description="Support bot",
    tags=["support", "prod"],
    model="llama-3.1-8b-instruct",
    temperature=0.2,
    max_length=512,
    top_p=0.9,
    top_k=40,
    stop=["###", "\nUser:"],
    batch_size=16,
    min_replicas=0,
    max_replicas=4,
    scale_up_delay=15,
    scale_down_delay=300,
    hardware="a10-single",
    engine="transformers",
)


@pytest.mark.parametrize(
    "spec",
    [
        FULL,
        DeploymentSpec(name="tiny", model="smollm2-135m-instruct", hardware="cpu"),
        DeploymentSpec(name="hub", model="hf:org/model@rev1", hardware="h100-x8"),
        DeploymentSpec(
            name="pinned", model="hf:org/model@main", model_commit="ab" * 20, hardware="cpu"
        ),
    ],
)
def test_round_trip_keeps_every_field(spec: DeploymentSpec) -> None:
    _, record = generate_key("ci")
    rebuilt, keys = from_serve_application(to_serve_application(spec, [record]))
    assert rebuilt == spec
    assert keys == [record]


def test_application_uses_ray_field_names() -> None:
    app = to_serve_application(FULL)
    assert app["name"] == "chat-prod"
    assert app["route_prefix"] == "/chat-prod"
    assert app["import_path"] == "serving.app:build_app"
    deployment, ingress = app["deployments"]
    assert (deployment["name"], ingress["name"]) == ("GaleModel", "GaleIngress")
    scaling = deployment["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (0, 4)
    assert (scaling["upscale_delay_s"], scaling["downscale_delay_s"]) == (15, 300)
    assert scaling["initial_replicas"] == 1
    assert deployment["ray_actor_options"]["num_gpus"] == 1
    assert deployment["ray_actor_options"]["accelerator_type"] == "A10G"
    assert deployment["max_surge_percent"] > 0
    assert deployment["max_queued_requests"] >= deployment["max_ongoing_requests"]


def test_cpu_profile_asks_for_no_gpu() -> None:
    app = to_serve_application(
        DeploymentSpec(name="c", model="smollm2-135m-instruct", hardware="cpu")
    )
    options = app["deployments"][0]["ray_actor_options"]
    assert "num_gpus" not in options and "accelerator_type" not in options
    assert options["num_cpus"] == 2


def test_what_changes_in_place_lives_in_user_config_or_autoscaling() -> None:
    app = to_serve_application(FULL)
    assert set(app["args"]) == {
        "model",
        "model_commit",
        "hardware",
        "engine",
        "trust_remote_code",
    }
    params = app["deployments"][0]["user_config"]["parameters"]
    assert (
        params["temperature"] == 0.2
        and params["batch_size"] == 16
        and params["stop"] == ["###", "\nUser:"]
    )


def test_key_hashes_reach_user_config_but_never_the_key() -> None:
    key, record = generate_key()
    app = to_serve_application(FULL, [record])
    assert key not in str(app)
    assert app["deployments"][0]["user_config"]["api_keys"][0]["hash"] == record.hash


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"temperature": 1.0}, "in-place"),
        ({"batch_size": 4, "max_replicas": 8}, "in-place"),
        ({"description": "new"}, "in-place"),
        ({"hardware": "a10-x4"}, "rolling"),
        ({"model": "mistral-7b-instruct-v0.3"}, "rolling"),
    ],
)
def test_change_kind(change: dict, kind: str) -> None:
    assert change_kind(FULL, FULL.model_copy(update=change)) == kind


def test_auto_engine_is_vllm_on_gpus_and_llamacpp_for_a_gguf_on_cpu() -> None:
    assert FULL.model_copy(update={"engine": "auto"}).effective_engine == "vllm"
    cpu = DeploymentSpec(name="c", model="smollm2-135m-instruct", hardware="cpu")
    assert cpu.effective_engine == "llamacpp"
    assert cpu.model_copy(update={"engine": "vllm"}).effective_engine == "vllm"
    hub = cpu.model_copy(update={"model": "hf:org/model"})
    assert hub.effective_engine == "transformers"


def test_llamacpp_sizes_its_slots_at_start_so_a_batch_change_replaces_replicas() -> None:
    cpu = DeploymentSpec(name="c", model="smollm2-135m-instruct", hardware="cpu", batch_size=4)
    assert to_serve_application(cpu)["args"]["max_num_seqs"] == 4
    assert change_kind(cpu, cpu.model_copy(update={"batch_size": 8})) == "rolling"
    tf = cpu.model_copy(update={"engine": "transformers"})
    assert "max_num_seqs" not in to_serve_application(tf)["args"]


def test_vllm_sizes_its_batch_at_start_so_a_batch_change_replaces_replicas() -> None:
    vllm = FULL.model_copy(update={"engine": "vllm"})
    assert to_serve_application(vllm)["args"]["max_num_seqs"] == 16
    assert "max_num_seqs" not in to_serve_application(FULL)["args"]
    assert change_kind(vllm, vllm.model_copy(update={"batch_size": 32})) == "rolling"
    assert change_kind(vllm, vllm.model_copy(update={"temperature": 0.9})) == "in-place"
    rebuilt, _ = from_serve_application(to_serve_application(vllm))
    assert rebuilt == vllm


def test_cost_at_min_and_max_replicas() -> None:
    assert replicas_per_hour_cost(FULL) == (0, 7.272)


def test_fit_verdicts() -> None:
    assert check_fit(FULL).fits is True
    big = FULL.model_copy(update={"model": "llama-3.3-70b-instruct"})
    verdict = check_fit(big)
    assert verdict.fits is False and "short by" in verdict.message
    assert check_fit(big.model_copy(update={"hardware": "a100-x8"})).fits is True
    assert check_fit(FULL.model_copy(update={"model": "hf:org/x"})).fits is None


def test_a_field_missing_from_an_older_application_takes_its_default() -> None:
    app = to_serve_application(FULL)
    del app["deployments"][0]["user_config"]["parameters"]["top_k"]
    del app["deployments"][0]["autoscaling_config"]["downscale_delay_s"]
    rebuilt, _ = from_serve_application(app)
    assert rebuilt == FULL.model_copy(update={"top_k": 50, "scale_down_delay": 600})


def test_the_ingress_takes_no_cpu_lives_on_the_head_and_never_scales_to_zero() -> None:
    for spec in (FULL, FULL.model_copy(update={"hardware": "cpu", "min_replicas": 0})):
        ingress = to_serve_application(spec)["deployments"][1]
        options = ingress["ray_actor_options"]
        assert options["num_cpus"] == 0 and "num_gpus" not in options
        assert 0 < options["resources"][HEAD_RESOURCE] < 0.01
        assert ingress["num_replicas"] == 1 and "autoscaling_config" not in ingress
        assert "user_config" not in ingress  # nothing of the spec, no key hashes


def test_an_application_deployed_before_the_ingress_still_reads() -> None:
    _, record = generate_key("old")
    app = to_serve_application(FULL, [record])
    old = {**app, "deployments": app["deployments"][:1]}
    assert from_serve_application(old) == (FULL, [record])
    # Order does not matter either: the model is found by name.
    swapped = {**app, "deployments": app["deployments"][::-1]}
    assert from_serve_application(swapped) == (FULL, [record])
    assert model_config(swapped)["name"] == "GaleModel"


def test_model_status_is_the_models_entry_only() -> None:
    status = {"deployments": {"GaleIngress": {"replicas": [1]}, "GaleModel": {"replicas": [2]}}}
    assert model_status(status) == {"replicas": [2]}
    assert model_status({"deployments": {}}) == {} and model_status({}) == {}


def test_key_limits_round_trip_in_user_config_and_unset_ones_stay_out() -> None:
    spec = FULL.model_copy(
        update={"key_rpm": 60, "key_token_budget": 10_000, "key_limit_window": 10}
    )
    (_, limited), (_, plain) = generate_key("limited"), generate_key("plain")
    limited = limited.model_copy(update={"rpm": 5, "concurrency": 2})
    app = to_serve_application(spec, [limited, plain])
    user_config = app["deployments"][0]["user_config"]
    assert (user_config["key_rpm"], user_config["key_tpm"]) == (60, None)
    stored = user_config["api_keys"]
    assert (stored[0]["rpm"], stored[0]["concurrency"]) == (5, 2)
    assert "tpm" not in stored[0] and "rpm" not in stored[1]  # replicas of older gale read them
    assert change_kind(FULL, spec) == "in-place"
    assert from_serve_application(app) == (spec, [limited, plain])


def test_fit_counts_a_gguf_at_its_file_size_on_llamacpp() -> None:
    cpu = DeploymentSpec(
        name="c", model="smollm2-135m-instruct", hardware="cpu", max_length=1000, batch_size=4
    )
    quantized = check_fit(cpu)
    dequantized = check_fit(cpu.model_copy(update={"engine": "transformers"}))
    # The bundled Q4_1 file is 98 MB; as 32-bit floats its 135 M parameters are 540 MB.
    assert 0.09 < quantized.weights_gb < 0.1 and dequantized.weights_gb == 0.135 * 4
    # 16-bit keys and values: 30 layers x 3 KV heads x 64 x 2 x 2 bytes per token.
    assert quantized.cache_gb == 30 * 3 * 64 * 2 * 2 * 1000 * 4 / 1e9
    assert quantized.fits is True


def test_pinned_commit_reaches_the_replica_args() -> None:
    from serving.replica import AppArgs

    spec = DeploymentSpec(
        name="pinned", model="hf:org/model@v1", model_commit="cd" * 20, hardware="cpu"
    )
    args = AppArgs.model_validate(to_serve_application(spec)["args"])
    assert args.model_commit == "cd" * 20


def test_an_application_deployed_before_pinning_still_reads_back() -> None:
    app = to_serve_application(DeploymentSpec(name="old", model="hf:org/m", hardware="cpu"))
    del app["args"]["model_commit"]
    spec, _ = from_serve_application(app)
    assert spec.model_commit is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("smollm2-135m-instruct", "not a Hugging Face repo"),
        ("/models/x.gguf", "not a Hugging Face repo"),
        ("hf:org/m@" + "ef" * 20, "names commit"),
    ],
)
def test_a_pin_only_for_hub_models_and_agreeing_with_a_written_commit(
    model: str, message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DeploymentSpec(name="x", model=model, model_commit="ab" * 20, hardware="cpu")
