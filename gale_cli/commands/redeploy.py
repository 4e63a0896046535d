"""`gale redeploy NAME`: change a deployment, keeping its endpoint and keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from gale_cli import output
from gale_cli.commands import specflags as flag
from gale_cli.commands.options import Json
from gale_cli.errors import UsageError

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from gale_cli import lifecycle

WHAT_HAPPENS = {
    "in-place": "Applied in place: the same replicas, no restart, no downtime.",
    "rolling": "Replicas are replaced in a rolling update: new ones start before old ones stop.",
    "start": "Deployed again at the same endpoint, with the same keys.",
    "none": "Nothing changes.",
}


@flag.spec_options(without=("name",))  # the name is the deployment's: NAME
def redeploy(
    deployment: Annotated[str, typer.Argument(metavar="NAME", help="The deployment to change.")],
    file: flag.File = None,
    recreate: Annotated[
        bool,
        typer.Option(
            "--recreate",
            help="Undeploy, then deploy (downtime), instead of updating in place.",
            rich_help_panel=flag.CONTROL,
        ),
    ] = False,
    yes: flag.Yes = False,
    json_out: Json = False,
    no_input: flag.NoInput = False,
    force: flag.Force = False,
    wait: flag.Wait = True,
    timeout: flag.Timeout = 600,
    **spec_flags: Any,
) -> None:
    """Change a deployment (flags, a file, or the wizard pre-filled with its live configuration)."""
    from gale_cli import lifecycle
    from gale_cli.commands.deploy import ask, show_pin
    from gale_cli.commands.waiting import wait_until_deployed
    from gale_cli.pinning import pin, redeploy_values
    from gale_cli.session import open_session
    from gale_cli.specinput import check_model_path, load_spec_file, merge, validate
    from serving.fit import check_fit

    changes = merge(load_spec_file(file) if file else {}, flag.spec_values(spec_flags))
    with open_session() as session:
        current = lifecycle.find(session.client, session.state, deployment)
        values = redeploy_values(current.spec, changes)
        interactive = output.is_interactive(no_input)
        asked = not changes and interactive
        spec = ask(values) if asked else validate(values)
        check_model_path(spec, session.config.is_local)
        spec = show_pin(spec, pin(spec))
        change = lifecycle.plan_redeploy(session.client, session.state, deployment, spec)
        verdict = check_fit(spec)
        if verdict.fits is False and not force:
            raise UsageError(verdict.message, hint="pass --force to redeploy anyway")
        _show_plan(change, recreate)
        if change.kind == "none" and not recreate:
            _finish(deployment, "unchanged", session.config.serve_url)
            return
        if not yes and not asked:
            if not interactive:
                raise UsageError(
                    "redeploy needs confirmation", hint="pass --yes to confirm without prompts"
                )
            if not typer.confirm("Apply this change?", default=True, err=True):
                raise typer.Exit(1)
        since = lifecycle.redeploy(session.client, session.state, change, recreate=recreate)
        if wait:
            wait_until_deployed(session, spec, timeout, since=since)
        _finish(deployment, "Deployed" if wait else "Deploying", session.config.serve_url)


def _show_plan(change: lifecycle.Change, recreate: bool) -> None:

    for field, old, new in change.diff:
        output.message(f"  {field}: {old!r} → {new!r}")
    if recreate and change.kind != "start":
        output.message(
            "Warning: --recreate undeploys first: the endpoint answers 404 until the new "
            "replicas are up.",
            style="bold yellow",
        )
    else:
        output.message(WHAT_HAPPENS[change.kind])


def _finish(name: str, status: str, serve_url: str) -> None:
    from gale_cli import lifecycle

    url = lifecycle.endpoint(serve_url, name)
    output.result(
        {"name": name, "status": status, "endpoint": url},
        f"'{name}' is {status} at {url}.",
        style="bold green",
    )
