"""The replica's one `AppArgs` reads every `args` the Serve config is written with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.replica import AppArgs
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec


@pytest.mark.parametrize(
    ("engine", "max_num_seqs"), [("transformers", None), ("vllm", 16), ("auto", None)]
)
def test_args_of_every_engine_validate(engine: str, max_num_seqs: int | None) -> None:
    spec = DeploymentSpec(
        name="demo", model="smollm2-135m-instruct", hardware="cpu", engine=engine, batch_size=16
    )
    args = AppArgs.model_validate(to_serve_application(spec)["args"])
    assert (args.model, args.hardware, args.engine) == ("smollm2-135m-instruct", "cpu", engine)
    # The batch size reaches a replica by one route: args for vLLM, user_config otherwise.
    assert args.max_num_seqs == max_num_seqs


def test_unknown_args_are_refused() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        AppArgs.model_validate(
            {"model": "smollm2-135m-instruct", "hardware": "cpu", "batch_size": 8}
        )
    with pytest.raises(ValidationError, match="unknown hardware profile"):
        AppArgs.model_validate({"model": "smollm2-135m-instruct", "hardware": "tpu-v9"})
