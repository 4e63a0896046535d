"""`gale models` and `gale hardware`: what can be deployed, and on what."""

from __future__ import annotations

from typing import Annotated

import typer

from gale_cli import output
from gale_cli.commands.options import Json
from gale_cli.errors import UsageError

models_app = typer.Typer(help="List the model catalog, or show one model.", no_args_is_help=False)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option(help="Only models with this tag.")] = None,
    json_out: Json = False,
) -> None:
    """List the models gale knows by id."""
    from serving import catalog

    if ctx.invoked_subcommand is not None:
        return
    entries = [m for m in catalog.models().values() if tag is None or tag in m.tags]
    output.result(
        [m.model_dump(mode="json") for m in entries],
        lambda: output.table(
            ["ID", "Name", "Params", "Context", "License", "Gated", "Tools", "Reasoning", "Tags"],
            (
                (
                    m.id,
                    m.name,
                    f"{m.params_b:g}B",
                    f"{m.context_length:,}",
                    m.license,
                    "yes" if m.gated else "no",
                    m.tool_call_format or "—",
                    m.reasoning_parser or "—",
                    ", ".join(m.tags),
                )
                for m in entries
            ),
            optional=("Tags", "Reasoning", "Tools", "License", "Context", "Gated"),
        ),
    )


@models_app.command("show")
def show_model(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="A catalog model id.")],
    json_out: Json = False,
) -> None:
    """Show one catalog model."""
    from serving import catalog

    entry = catalog.models().get(model_id)
    if entry is None:
        raise UsageError(f"unknown model '{model_id}'", hint="`gale models` lists the catalog")
    source = entry.source
    where = f"hf:{source.repo}" if source.repo else f"bundled ({source.package}/{source.file})"
    rows = [
        ("ID", entry.id),
        ("Name", entry.name),
        ("Family", entry.family),
        ("Source", where),
        ("Parameters", f"{entry.params_b:g}B"),
        ("Context length", f"{entry.context_length:,} tokens"),
        (
            "KV cache shape",
            f"{entry.layers} layers × {entry.kv_heads} KV heads × {entry.head_dim}",
        ),
        ("License", entry.license),
        ("Gated", "yes (accept the license on Hugging Face)" if entry.gated else "no"),
        ("Tool-call format", entry.tool_call_format or "none (only forced tool calls)"),
        ("Reasoning", _reasoning(entry.reasoning_parser)),
        ("Tags", ", ".join(entry.tags)),
        ("Description", entry.description or "—"),
    ]
    output.result(entry.model_dump(mode="json"), lambda: output.table(["Field", "Value"], rows))


def _reasoning(parser: str | None) -> str:
    """How a model's thinking text is marked, for `gale models show`."""
    if parser is None:
        return "none"
    marks = {"qwen3": "<think>…</think>", "openai_gptoss": "harmony analysis channel"}
    return f"{parser} ({marks[parser]})" if parser in marks else parser


def hardware(json_out: Json = False) -> None:
    """List the hardware profiles a deployment can run on, with prices."""
    from serving import catalog

    profiles = list(catalog.hardware().values())
    output.result(
        [p.model_dump(mode="json") for p in profiles],
        lambda: output.table(
            ["ID", "Name", "GPUs", "GPU memory", "Accelerator", "CPUs", "Memory", "Price/h"],
            (
                (
                    p.id,
                    p.name,
                    p.gpus,
                    f"{p.gpus} × {p.gpu_memory_gb:g} GB" if p.is_gpu else "—",
                    p.accelerator_type or "—",
                    p.cpus,
                    f"{p.memory_gb:g} GB",
                    f"{p.price_per_hour:g}",
                )
                for p in profiles
            ),
            optional=("GPUs", "Accelerator", "CPUs"),
        ),
    )
