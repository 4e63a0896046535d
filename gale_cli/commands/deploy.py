"""`gale deploy`: answers from the wizard, flags or a spec file → a validated spec → the cluster."""

from __future__ import annotations

import sys
from typing import Any

from gale_cli import output
from gale_cli.commands import specflags as flag
from gale_cli.errors import GaleError, UsageError
from gale_cli.specinput import load_spec_file, merge, validate
from serving.fit import check_fit
from serving.serve_config import to_serve_application
from serving.spec import DeploymentSpec

EXIT_CANCELLED = 1


class Cancelled(GaleError):
    """The person left the wizard or declined the terms: nothing was deployed."""


def deploy(
    model: flag.Model = None,
    name: flag.Name = None,
    description: flag.Description = None,
    tag: flag.Tags = None,
    trust_remote_code: flag.TrustRemoteCode = None,
    temperature: flag.Temperature = None,
    max_length: flag.MaxLength = None,
    top_p: flag.TopP = None,
    top_k: flag.TopK = None,
    stop: flag.Stop = None,
    batch_size: flag.BatchSize = None,
    min_replicas: flag.MinReplicas = None,
    max_replicas: flag.MaxReplicas = None,
    scale_up_delay: flag.ScaleUpDelay = None,
    scale_down_delay: flag.ScaleDownDelay = None,
    hardware: flag.Hardware = None,
    file: flag.File = None,
    accept_terms: flag.AcceptTerms = False,
    dry_run: flag.DryRun = False,
    json_out: flag.Json = False,
    no_input: flag.NoInput = False,
    force: flag.Force = False,
) -> None:
    """Deploy a model: the wizard asks for what flags and the spec file leave open."""
    flags = {
        "model": model,
        "name": name,
        "description": description,
        "tags": tag,
        "trust_remote_code": trust_remote_code,
        "temperature": temperature,
        "max_length": max_length,
        "top_p": top_p,
        "top_k": top_k,
        "stop": stop,
        "batch_size": batch_size,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "scale_up_delay": scale_up_delay,
        "scale_down_delay": scale_down_delay,
        "hardware": hardware,
    }
    values = merge(load_spec_file(file) if file else {}, flags)
    interactive = not no_input and sys.stdin.isatty()
    if interactive:
        spec = ask(values)
    else:
        spec = validate(values)
        output.show(output.render_review(spec))
        if not dry_run and not accept_terms:
            raise UsageError(
                "the terms and conditions are not accepted",
                hint="pass --accept-terms to accept them without prompts",
            )
    verdict = check_fit(spec)
    if dry_run:
        plan = {
            "spec": spec.model_dump(mode="json"),
            "serve_application": to_serve_application(spec),
            "fit": {"fits": verdict.fits, "message": verdict.message},
        }
        if json_out:
            output.print_json(plan)
        else:
            output.message("dry run: nothing was deployed. The Serve application config:")
            output.print_json(plan["serve_application"])
        return
    if verdict.fits is False and not force:
        raise UsageError(verdict.message, hint="pass --force to deploy anyway")
    raise GaleError(
        "deploying to a cluster is not available in this version",
        hint="use --dry-run to see what would be deployed",
    )


def ask(values: dict[str, Any]) -> DeploymentSpec:
    """Run the interactive wizard, pre-filled with `values`."""
    from gale_cli.prompts import QuestionaryPrompter
    from gale_cli.wizard import run_wizard

    spec = run_wizard(values, QuestionaryPrompter(), render_review=output.render_review)
    if spec is None:
        raise Cancelled("cancelled: nothing was deployed")
    return spec
