"""`gale deploy`: answers from the wizard, flags or a spec file → a validated spec → the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gale_cli import output
from gale_cli.commands import specflags as flag
from gale_cli.commands.options import Json
from gale_cli.errors import GaleError, UsageError

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from serving.spec import DeploymentSpec


class Cancelled(GaleError):
    """The person left the wizard or declined the terms: nothing was deployed."""


@flag.spec_options()
def deploy(
    file: flag.File = None,
    accept_terms: flag.AcceptTerms = False,
    dry_run: flag.DryRun = False,
    json_out: Json = False,
    no_input: flag.NoInput = False,
    force: flag.Force = False,
    wait: flag.Wait = True,
    timeout: flag.Timeout = 600,
    **spec_flags: Any,
) -> None:
    """Deploy a model: the wizard asks for what flags and the spec file leave open."""
    from gale_cli.specinput import load_spec_file, merge, validate
    from serving.fit import check_fit
    from serving.serve_config import to_serve_application

    values = merge(load_spec_file(file) if file else {}, flag.spec_values(spec_flags))
    if output.is_interactive(no_input):
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

        def show() -> None:
            output.message("dry run: nothing was deployed. The Serve application config:")
            output.print_json(plan["serve_application"])

        output.result(plan, show)
        return
    if verdict.fits is False and not force:
        raise UsageError(verdict.message, hint="pass --force to deploy anyway")
    submit(spec, wait=wait, timeout=timeout)


def ask(values: dict[str, Any]) -> DeploymentSpec:
    """Run the interactive wizard, pre-filled with `values`."""
    from gale_cli.prompts import QuestionaryPrompter
    from gale_cli.wizard import run_wizard

    spec = run_wizard(values, QuestionaryPrompter(), render_review=output.render_review)
    if spec is None:
        raise Cancelled("cancelled: nothing was deployed")
    return spec


def submit(spec: DeploymentSpec, *, wait: bool, timeout: float) -> None:
    """Submit a new deployment, follow it, and hand out its endpoint and first key."""
    from gale_cli import lifecycle
    from gale_cli.commands.waiting import wait_until_deployed
    from gale_cli.connection import ClusterConfig
    from gale_cli.pinning import hub_repo, pin
    from gale_cli.session import open_session
    from gale_cli.specinput import check_model_path

    # Before a local head starts: a mistyped path or repo should cost no head start.
    check_model_path(spec, ClusterConfig.from_env().is_local)
    spec = show_pin(spec, pin(spec))
    with open_session(start_local=True, hf_token=hub_repo(spec) is not None) as session:
        key = lifecycle.deploy(session.client, session.state, spec)
        result = {
            "name": spec.name,
            "status": "Deploying",
            "endpoint": lifecycle.endpoint(session.config.serve_url, spec.name),
            "api_key": key,
        }
        output.unless_json(lambda: show_access(result))
        if wait:
            try:
                wait_until_deployed(session, spec, timeout)
            except (GaleError, KeyboardInterrupt) as exc:
                # The key exists now: a script must still get it, with the truth about status.
                failed = isinstance(exc, GaleError)
                error = {"error": exc.message} if isinstance(exc, GaleError) else {}
                output.result({**result, "status": "Failed" if failed else "Deploying", **error})
                raise
            result["status"] = "Deployed"
    output.result(result, f"'{spec.name}' is {result['status']}.", style="bold green")


def show_pin(before: DeploymentSpec, after: DeploymentSpec) -> DeploymentSpec:
    """Say which commit a Hub revision was pinned to, when gale just resolved it."""
    if after.model_commit and not before.model_commit:
        output.message(f"{after.model} is commit {after.model_commit}: every replica loads it.")
    return after


def show_access(result: dict[str, Any]) -> None:
    """The endpoint, the key (shown once) and snippets that read the key from the environment."""
    url, name = result["endpoint"], result["name"]
    output.message(f"Endpoint: {url}")
    output.message(f"API key (shown once; store it now): {result['api_key']}")
    output.message(
        "\nTry it, with the key in GALE_API_KEY:\n"
        f'  curl {url}/chat/completions -H "Authorization: Bearer $GALE_API_KEY" \\\n'
        "    -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{name}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n'
        "\n  import os\n"
        "  from openai import OpenAI\n"
        f'  client = OpenAI(base_url="{url}", api_key=os.environ["GALE_API_KEY"])\n'
        f'  reply = client.chat.completions.create(model="{name}", '
        'messages=[{"role": "user", "content": "Hello!"}])\n'
        "  print(reply.choices[0].message.content)\n"
    )
