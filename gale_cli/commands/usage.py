"""`gale usage`: requests, tokens, replica-hours and their cost, per deployment and per key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from gale_cli import output
from gale_cli.commands.options import Json
from gale_cli.errors import UsageError

if TYPE_CHECKING:
    from gale_cli.metrics_reader import Sample
    from gale_cli.session import Session


def usage(
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Only this deployment.")
    ] = None,
    since: Annotated[
        str, typer.Option("--since", help="Over this span back from now: 12h, 24h, 7d.")
    ] = "24h",
    by: Annotated[
        str, typer.Option("--by", help="A row per key (key) or per UTC day (day).")
    ] = "key",
    json_out: Json = False,
) -> None:
    """Requests and tokens per deployment and key, replica-hours per hardware and their cost.

    Counted by each deployment's ledger in the cluster by UTC hour; an hour counts if any
    of it falls in the span.
    """
    from gale_cli import usage as ledger
    from gale_cli.session import open_session
    from serving.keys import parse_duration

    try:
        span = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}", hint="e.g. --since 24h") from None
    if by not in ("key", "day"):
        raise UsageError(f"--by: '{by}' is neither key nor day", hint="--by key or --by day")
    with open_session() as session:
        samples = read_samples(session)
        names = key_names(session, name)
    rows = ledger.usage(samples, since_s=span, by=by, prices=prices(), key_names=names, only=name)
    if name is not None and not rows:
        rows = [ledger.empty(name, by)]
    output.result(rows, lambda: _show(rows, by))


def read_samples(session: Session) -> list[Sample]:
    """gale's metric samples from the session's cluster."""
    from gale_cli.metrics_reader import MetricsReader

    with MetricsReader(session.config) as reader:
        return reader.samples()


def key_names(session: Session, only: str | None) -> dict[tuple[str, str], str]:
    """(deployment, key id) → key name, for the live deployments' keys."""
    from gale_cli import lifecycle

    found = lifecycle.all_deployments(session.client, session.state)
    return {
        (deployment, k.id): k.name
        for deployment, live in found.items()
        if only is None or deployment == only
        for k in live.keys
    }


def prices() -> dict[str, float]:
    """Each hardware profile's price per replica-hour."""
    from serving import catalog

    return {profile.id: profile.price_per_hour for profile in catalog.hardware().values()}


def _show(rows: list[dict[str, Any]], by: str) -> None:
    for row in rows:
        output.table(
            ["Key id" if by == "key" else "Day", "Name", "Requests", "Prompt tok", "Completion tok"]
            if by == "key"
            else ["Day", "Requests", "Prompt tok", "Completion tok"],
            (
                [
                    r["id"],
                    r["name"] or "—",
                    r["requests"],
                    r["prompt_tokens"],
                    r["completion_tokens"],
                ]
                if by == "key"
                else [r["day"], r["requests"], r["prompt_tokens"], r["completion_tokens"]]
                for r in row["keys" if by == "key" else "days"]
            ),
            title=f"{row['name']}: {row['requests']} requests, "
            f"{row['prompt_tokens'] + row['completion_tokens']} tokens, cost {row['cost']:g}",
        )
        output.table(
            ["Hardware", "Replica-hours", "Price/hour", "Cost"],
            (
                [h["id"], f"{h['replica_hours']:.3f}", h["price_per_hour"], h["cost"]]
                for h in row["hardware"]
            ),
        )
