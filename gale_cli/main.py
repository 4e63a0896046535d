"""The `gale` command: the Typer app, and the one place errors become messages and exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperOption

from gale_cli.commands import (
    catalog,
    chat,
    cluster_cmds,
    deploy,
    keys,
    manage,
    observe,
    redeploy,
    usage,
)
from gale_cli.errors import GaleError

EXIT_INTERRUPTED = 130


def _show_flags_bare() -> None:
    """Typer's rich help prints `<bool>` beside every flag as if it took a value: print none."""
    show_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else show_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_flags_bare()
app = typer.Typer(
    name="gale",
    help="Deploy open-source LLMs as autoscaled, key-protected, OpenAI-compatible services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog.models_app, name="models")
app.command("hardware")(catalog.hardware)
app.command("deploy")(deploy.deploy)
app.command("redeploy")(redeploy.redeploy)
app.command("list")(manage.list_deployments)
app.command("status")(manage.status)
app.command("describe")(manage.describe)
app.command("endpoint")(manage.endpoint)
app.add_typer(keys.keys_app, name="keys")
app.command("chat")(chat.chat)
app.command("top")(observe.top)
app.command("logs")(observe.logs)
app.command("usage")(usage.usage)
app.command("undeploy")(manage.undeploy)
app.command("delete")(manage.delete)
app.command("restore")(manage.restore)
app.command("export")(manage.export)
app.add_typer(cluster_cmds.cluster_app, name="cluster")


def run() -> None:
    """Console-script entry point: run the app and map every outcome to an exit code."""
    sys.exit(main(sys.argv[1:]))


def main(argv: list[str]) -> int:
    """Run `gale` with arguments; return the exit code instead of exiting."""
    from gale_cli import output

    debug = os.environ.get("GALE_DEBUG") == "1"
    output.set_json(False)  # until a command's --json says otherwise
    try:
        result = app(args=argv, prog_name="gale", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except (KeyboardInterrupt, typer.Abort):
        output.message("interrupted")
        return EXIT_INTERRUPTED
    except typer.Exit as exc:
        if exc.exit_code == EXIT_INTERRUPTED:  # Typer's own word for a KeyboardInterrupt
            output.message("interrupted")
        return exc.exit_code
    except typer.TyperException as exc:  # bad flags or arguments: Typer words them
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            output.error(exc.message)
        return exc.exit_code
    except GaleError as exc:
        if debug:
            traceback.print_exc()
        output.error(exc.message, exc.hint)
        return exc.exit_code
    except Exception as exc:  # the last resort: no traceback unless asked for
        if debug:
            raise
        output.error(f"unexpected error: {exc}", "run again with GALE_DEBUG=1 to see the traceback")
        return 1
