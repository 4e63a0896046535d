"""`gale keys create|list|revoke`: a deployment's API keys, changed in place within seconds."""

from __future__ import annotations

from typing import Annotated

import typer

from gale_cli import output
from gale_cli.commands.options import Json, Name

keys_app = typer.Typer(
    help="Create, list and revoke a deployment's API keys.", no_args_is_help=True
)
# How long `keys revoke` waits for every replica to refuse the key.
REVOKE_CONFIRM_S = 120.0


@keys_app.command("create")
def create(
    name: Name,
    key_name: Annotated[
        str | None,
        typer.Option("--key-name", help="A label for the key (default: key-<6 hex>, unique)."),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Stop working after this long: 30m, 12h, 7d."),
    ] = None,
    json_out: Json = False,
) -> None:
    """Create a key (shown once); it works within seconds, with no restart."""
    from gale_cli import lifecycle
    from gale_cli.errors import UsageError
    from gale_cli.session import open_session
    from serving.keys import parse_duration

    try:
        seconds = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as exc:
        raise UsageError(f"--expires-in: {exc}", hint="e.g. --expires-in 12h") from None
    with open_session() as session:
        key, record = lifecycle.create_key(
            session.client, session.state, name, key_name, expires_in=seconds
        )

    def show() -> None:
        output.message(f"Created key {record.id} ({record.name}). Shown once; store it now:")
        typer.echo(key)

    output.result(
        {"id": record.id, "name": record.name, "key": key, "expires_at": record.expires_at}, show
    )


@keys_app.command("list")
def list_keys(name: Name, json_out: Json = False) -> None:
    """A deployment's keys: id, name and prefix only (keys are stored as hashes)."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        keys = lifecycle.find(session.client, session.state, name).keys
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "created_at": k.created_at,
            "expires_at": k.expires_at,
        }
        for k in keys
    ]
    output.result(
        rows,
        lambda: output.table(
            ["Key id", "Name", "Prefix"], ((k.id, k.name, k.prefix + "…") for k in keys)
        ),
    )


@keys_app.command("revoke")
def revoke(
    name: Name,
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key's id (see `gale keys list`).")
    ],
) -> None:
    """Revoke a key; requests with it are refused within seconds."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        record = lifecycle.revoke_key(
            session.client, session.state, name, key_id, confirm_within=REVOKE_CONFIRM_S
        )
    output.message(
        f"Revoked key {record.id} ({record.name}) of '{name}': every replica refuses it."
    )
