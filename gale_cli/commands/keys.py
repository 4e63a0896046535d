"""`gale keys create|list|revoke`: a deployment's API keys, changed in place within seconds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from gale_cli import output
from gale_cli.commands.options import Json, Name

if TYPE_CHECKING:
    from serving.keys import KeyRecord

# A key's own limits (serving.keys.KeyRecord), by field.
LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "token_budget")

keys_app = typer.Typer(
    help="Create, list, limit and revoke a deployment's API keys.", no_args_is_help=True
)
LIMITS = "Limits (each overrides the deployment's --key-* default)"
Rpm = Annotated[
    int | None,
    typer.Option("--rpm", min=1, help="Requests per minute.", rich_help_panel=LIMITS),
]
Tpm = Annotated[
    int | None,
    typer.Option(
        "--tpm", min=1, help="Tokens (prompt + completion) per minute.", rich_help_panel=LIMITS
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option("--concurrency", min=1, help="Requests at once.", rich_help_panel=LIMITS),
]
TokenBudget = Annotated[
    int | None,
    typer.Option(
        "--token-budget",
        min=1,
        help="Tokens (prompt + completion) in all; refused once used.",
        rich_help_panel=LIMITS,
    ),
]
KeyId = Annotated[
    str, typer.Argument(metavar="KEY_ID", help="The key's id (see `gale keys list`).")
]
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
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    token_budget: TokenBudget = None,
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
        limits = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency, "token_budget": token_budget}
        key, record = lifecycle.create_key(
            session.client, session.state, name, key_name, expires_in=seconds, limits=limits
        )

    def show() -> None:
        output.message(f"Created key {record.id} ({record.name}). Shown once; store it now:")
        typer.echo(key)

    output.result(
        {
            "id": record.id,
            "name": record.name,
            "key": key,
            "expires_at": record.expires_at,
            **limits_of(record),
        },
        show,
    )


def limits_of(record: KeyRecord) -> dict[str, int | None]:
    """A key's own limits by name (None: the deployment's default)."""
    return {field: getattr(record, field) for field in LIMIT_FIELDS}


@keys_app.command("update")
def update(
    name: Name,
    key_id: KeyId,
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    token_budget: TokenBudget = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            help="Remove one of the key's own limits (rpm, tpm, concurrency, token-budget or "
            "all); repeatable. The deployment's default then applies.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Change a key's limits in place; replicas apply them within seconds, with no restart."""
    from gale_cli import lifecycle
    from gale_cli.errors import UsageError
    from gale_cli.session import open_session

    changes: dict[str, int | None] = {}
    for item in clear or []:
        field = item.strip().lower().replace("-", "_")
        if field == "all":
            changes.update(dict.fromkeys(LIMIT_FIELDS))
        elif field in LIMIT_FIELDS:
            changes[field] = None
        else:
            raise UsageError(
                f"--clear: '{item}' is not a limit",
                hint="use rpm, tpm, concurrency, token-budget or all",
            )
    given = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency, "token_budget": token_budget}
    for field, value in given.items():
        if value is not None:
            if field in changes:
                raise UsageError(f"--{field.replace('_', '-')} is both set and cleared")
            changes[field] = value
    if not changes:
        raise UsageError(
            "nothing to change",
            hint="give --rpm, --tpm, --concurrency, --token-budget or --clear",
        )
    with open_session() as session:
        record = lifecycle.update_key(session.client, session.state, name, key_id, changes)
    shown = ", ".join(
        f"{k}={v if v is not None else 'default'}" for k, v in limits_of(record).items()
    )
    output.result(
        {"id": record.id, "name": record.name, **limits_of(record)},
        lambda: output.message(f"Updated key {record.id} ({record.name}) of '{name}': {shown}."),
    )


@keys_app.command("list")
def list_keys(name: Name, json_out: Json = False) -> None:
    """A deployment's keys: id, name, prefix, limits and usage (keys are stored as hashes).

    A limit the key does not set itself is the deployment's default. Usage is what the
    deployment's ledger has counted (`gale usage`); it is blank where metrics are unreadable.
    """
    from gale_cli import lifecycle
    from gale_cli.commands.usage import read_samples
    from gale_cli.errors import GaleError
    from gale_cli.session import open_session
    from gale_cli.usage import key_usage

    with open_session() as session:
        live = lifecycle.find(session.client, session.state, name)
        try:
            used: dict[str, dict[str, int]] | None = key_usage(read_samples(session), name)
        except GaleError as exc:
            output.message(f"usage is unavailable: {exc}")
            used = None
    defaults = {field: getattr(live.spec, f"key_{field}") for field in LIMIT_FIELDS}
    rows: list[dict[str, Any]] = [
        {
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "created_at": k.created_at,
            "expires_at": k.expires_at,
            "limits": {
                field: own if own is not None else defaults[field]
                for field, own in limits_of(k).items()
            },
            "usage": None
            if used is None
            else used.get(k.id, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}),
        }
        for k in live.keys
    ]

    def limit_text(limits: dict[str, int | None]) -> str:
        shown = [f"{field.replace('_', ' ')} {v}" for field, v in limits.items() if v is not None]
        return ", ".join(shown) or "none"

    def usage_text(usage: dict[str, int] | None) -> str:
        if usage is None:
            return "?"
        tokens = usage["prompt_tokens"] + usage["completion_tokens"]
        return f"{usage['requests']} req, {tokens} tok"

    output.result(
        rows,
        lambda: output.table(
            ["Key id", "Name", "Prefix", "Limits", "Usage"],
            (
                (
                    r["id"],
                    r["name"],
                    r["prefix"] + "…",
                    limit_text(r["limits"]),
                    usage_text(r["usage"]),
                )
                for r in rows
            ),
        ),
    )


@keys_app.command("revoke")
def revoke(
    name: Name,
    key_id: KeyId,
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
