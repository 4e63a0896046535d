"""The spec's fields as command-line options. Generated from serving/spec.py by
`python -m gale_cli.commands.specflags`: do not edit."""

from __future__ import annotations

from typing import Any

# (field, flag, type, help, --help panel)
OPTIONS: tuple[tuple[str, str, Any, str, str], ...] = (
    (
        "model",
        "--model",
        str,
        "A catalog id, hf:ORG/NAME[@REVISION], or the absolute path of a model folder or .gguf file.",
        "General details",
    ),
    (
        "model_commit",
        "--model-commit",
        str,
        "The Hub commit the model's revision resolved to at deploy time (gale sets it; replicas download exactly this commit).",
        "General details",
    ),
    (
        "name",
        "--name",
        str,
        "The endpoint path and the Ray application name: 1-63 lowercase letters, digits and hyphens, starting with a letter and ending with a letter or digit.",
        "General details",
    ),
    (
        "description",
        "--description",
        str,
        "What the deployment is for (up to 500 characters).",
        "General details",
    ),
    (
        "tags",
        "--tag",
        list[str],
        "Tags to find it by (repeatable, up to 20, each 1 to 32 characters).",
        "General details",
    ),
    (
        "trust_remote_code",
        "--trust-remote-code",
        bool,
        "Run the model repository's own Python code.",
        "General details",
    ),
    (
        "temperature",
        "--temperature",
        float,
        "Sampling temperature; 0 is greedy (0 to 2).",
        "Parameters",
    ),
    (
        "max_length",
        "--max-length",
        int,
        "Most tokens one request generates, at most the model's context length (at least 1).",
        "Parameters",
    ),
    (
        "top_p",
        "--top-p",
        float,
        "Sample from the most likely tokens that make up this much probability (above 0, at most 1).",
        "Parameters",
    ),
    (
        "top_k",
        "--top-k",
        int,
        "Sample from this many most likely tokens (at least 1).",
        "Parameters",
    ),
    (
        "stop",
        "--stop",
        list[str],
        "Sequences that end generation (repeatable, up to 4, each 1 to 64 characters).",
        "Parameters",
    ),
    (
        "batch_size",
        "--batch-size",
        int,
        "Requests a replica generates for together (1 to 256).",
        "Parameters",
    ),
    (
        "min_replicas",
        "--min-replicas",
        int,
        "Replicas kept running; 0 scales to zero (0 to 100).",
        "Parameters",
    ),
    (
        "max_replicas",
        "--max-replicas",
        int,
        "Most replicas, at least min_replicas (1 to 100).",
        "Parameters",
    ),
    (
        "scale_up_delay",
        "--scale-up-delay",
        float,
        "Seconds the load must stay high before a replica is added (0 to 3600).",
        "Parameters",
    ),
    (
        "scale_down_delay",
        "--scale-down-delay",
        float,
        "Seconds the load must stay low before a replica is removed (0 to 86400).",
        "Parameters",
    ),
    (
        "hardware",
        "--hardware",
        str,
        "A hardware profile id (see `gale hardware`).",
        "Hardware",
    ),
    (
        "engine",
        "--engine",
        str,
        "The inference engine; auto is vLLM on GPU profiles, transformers on CPU (auto, transformers or vllm).",
        "Hardware",
    ),
)
