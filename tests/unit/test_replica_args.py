"""The replica's entry: the import path Serve configs name, and the one `AppArgs` it binds."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from serving.replica import AppArgs
from serving.serve_config import IMPORT_PATH, to_serve_application
from serving.spec import DeploymentSpec


@pytest.mark.parametrize(
    ("engine", "max_num_seqs"),
    [("transformers", None), ("vllm", 16), ("llamacpp", 16), ("auto", 16)],
)
def test_args_of_every_engine_validate(engine: str, max_num_seqs: int | None) -> None:
    spec = DeploymentSpec(
        name="demo", model="smollm2-135m-instruct", hardware="cpu", engine=engine, batch_size=16
    )
    args = AppArgs.model_validate(to_serve_application(spec)["args"])
    assert (args.model, args.hardware, args.engine) == ("smollm2-135m-instruct", "cpu", engine)
    # The batch size reaches a replica by one route: args for vLLM and llama.cpp (auto on a
    # GGUF on CPU), user_config otherwise.
    assert args.max_num_seqs == max_num_seqs


def test_unknown_args_are_refused() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        AppArgs.model_validate(
            {"model": "smollm2-135m-instruct", "hardware": "cpu", "batch_size": 8}
        )
    with pytest.raises(ValidationError, match="unknown hardware profile"):
        AppArgs.model_validate({"model": "smollm2-135m-instruct", "hardware": "tpu-v9"})


def test_the_import_path_in_serve_configs_names_the_builder() -> None:
    # Live clusters' configs hold this path: it must keep resolving after any move.
    from serving.deployment import build_app

    module, _, name = IMPORT_PATH.partition(":")
    assert getattr(importlib.import_module(module), name) is build_app
