"""Reading and removing deployments: list, status, describe, endpoint, undeploy, delete, restore."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gale_cli import output
from gale_cli.commands import specflags as flag
from gale_cli.commands.options import Json, Name
from gale_cli.errors import UsageError

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from gale_cli import lifecycle
    from gale_cli.session import Session


def _age(since: float | None) -> str:
    if not since:
        return "—"
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _row(live: lifecycle.Live, serve_url: str) -> dict[str, Any]:
    from gale_cli import lifecycle

    spec = live.spec
    return {
        "name": spec.name,
        "model": spec.model,
        "status": live.status,
        "replicas": {
            "running": live.replicas_running,
            "min": spec.min_replicas,
            "max": spec.max_replicas,
        },
        "hardware": spec.hardware,
        "endpoint": lifecycle.endpoint(serve_url, spec.name),
        "created_at": live.created_at,
        "message": live.message,
    }


def list_deployments(json_out: Json = False) -> None:
    """Every deployment: running ones from the cluster, undeployed ones from local state."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        rows = [
            _row(live, session.config.serve_url)
            for live in lifecycle.all_deployments(session.client, session.state).values()
        ]
    output.result(
        rows,
        lambda: output.table(
            ["Name", "Model", "Status", "Replicas", "Hardware", "Endpoint", "Age"],
            (
                (
                    r["name"],
                    r["model"],
                    r["status"],
                    "{running} / {min} / {max}".format(**r["replicas"]),
                    r["hardware"],
                    r["endpoint"],
                    _age(r["created_at"]),
                )
                for r in rows
            ),
            optional=("Age", "Hardware", "Replicas", "Model"),
        ),
    )


def status(
    name: Name,
    watch: Annotated[bool, typer.Option("--watch", help="Keep watching until Ctrl-C.")] = False,
    json_out: Json = False,
) -> None:
    """A deployment's status and replicas (--watch follows it)."""
    from gale_cli import lifecycle
    from gale_cli.commands.waiting import describe_progress
    from gale_cli.nodes import where_replicas_run
    from gale_cli.session import open_session
    from gale_cli.startup import StartupReader

    with open_session() as session:
        reader = StartupReader(session.client)
        while True:
            live = lifecycle.find(session.client, session.state, name)
            row = _row(live, session.config.serve_url)
            app = session.client.get_application(name) if live.deployed else None
            if app is not None:
                progress, failure = reader.status(name, app)
                now = time.time()
                row["detail"] = describe_progress(live.spec, progress, now)
                row["starting"] = [start.to_json(now) for start in progress.starting]
                row["replicas_on"], lost = where_replicas_run(app, session.client.nodes())
                if lost:
                    row["lost_node"] = lost
                    row["detail"] = f"{lost[0].upper()}{lost[1:]}. {row['detail']}"
                if failure is not None:
                    row["failure"] = failure.to_json()
                    row["detail"] = failure.text(name)
            detail = row.get("detail", row["message"])
            text = f"{name}: {row['status']}. {detail}".rstrip(". ") + "."
            for replica in row.get("replicas_on", []):
                text += f"\n  replica {replica['replica_id']}: {replica['state'].lower()}, "
                text += f"on node {replica['node']}"
            output.result(row, text)
            if not watch:
                return
            time.sleep(2)


def describe(name: Name, json_out: Json = False) -> None:
    """The configuration view: every parameter, hardware, endpoint, keys and revision history."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session
    from gale_cli.startup import StartupReader

    with open_session() as session:
        live = lifecycle.find(session.client, session.state, name)
        revisions = session.state.revisions(name)
        app = session.client.get_application(name) if live.deployed else None
        last_start = StartupReader(session.client).last_start(app) if app else None
        info = {
            **_row(live, session.config.serve_url),
            "spec": live.spec.model_dump(mode="json"),
            "keys": [
                {"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at}
                for k in live.keys
            ],
            "revisions": [
                {"revision": r.revision, "action": r.action, "created_at": r.created_at}
                for r in revisions
            ],
            "last_start": last_start,
            "usage": _usage_totals(session, name),
        }
    output.result(info, lambda: _show_description(live, info))


def _show_description(live: lifecycle.Live, info: dict[str, Any]) -> None:
    output.show(output.render_description(live.spec))
    output.table(
        ["Field", "Value"],
        [
            ("Status", info["status"]),
            ("Endpoint", info["endpoint"]),
            ("Replicas running", live.replicas_running),
        ],
    )
    if info.get("last_start"):
        start = info["last_start"]
        output.table(
            ["Phase", "Seconds"],
            [
                *((p["phase"], f"{p['seconds']:.1f}") for p in start["phases"]),
                ("total", f"{start['total_s']:.1f}"),
            ],
            title=f"Last start (replica {start['replica_id'][:8]}, {_age(start['finished_at'])} ago)",
        )
    output.table(
        ["Key id", "Name", "Prefix", "Created"],
        (
            (k["id"], k["name"], k["prefix"] + "…", _age(k["created_at"]) + " ago")
            for k in info["keys"]
        ),
        title="API keys",
    )
    usage = info["usage"]
    if usage is not None:
        output.message(
            f"Usage (last 30 days): {usage['requests']} requests, {usage['prompt_tokens']} prompt "
            f"and {usage['completion_tokens']} completion tokens, cost {usage['cost']:g}"
        )
    output.table(
        ["Revision", "Action", "When"],
        ((r["revision"], r["action"], _age(r["created_at"]) + " ago") for r in info["revisions"]),
        title="Revisions",
    )


def _usage_totals(session: Session, name: str) -> dict[str, Any] | None:
    """The deployment's usage over 30 days (`gale usage`), or None if metrics are unreadable."""
    from gale_cli.commands.usage import prices, read_samples
    from gale_cli.errors import GaleError
    from gale_cli.usage import usage

    try:
        samples = read_samples(session)
    except GaleError:
        return None
    rows = usage(samples, since_s=30 * 86400, by="key", prices=prices(), only=name)
    if not rows:
        return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    return {k: rows[0][k] for k in ("requests", "prompt_tokens", "completion_tokens", "cost")}


def endpoint(name: Name, json_out: Json = False) -> None:
    """A deployment's OpenAI base URL."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        lifecycle.find(session.client, session.state, name)
        url = lifecycle.endpoint(session.config.serve_url, name)
    output.result({"name": name, "endpoint": url}, lambda: typer.echo(url))


def undeploy(name: Name, json_out: Json = False) -> None:
    """Free a deployment's replicas; its configuration, keys and endpoint are kept."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        lifecycle.undeploy(session.client, session.state, name)
    output.result(
        {"name": name, "status": "Undeployed"},
        f"'{name}' is undeployed; `gale redeploy {name}` brings it back at the same endpoint.",
    )


def delete(name: Name, yes: flag.Yes = False) -> None:
    """Remove a deployment everywhere: replicas, configuration, keys, history."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        lifecycle.find(session.client, session.state, name)
        if not yes:
            if not output.is_interactive():
                raise UsageError(
                    f"deleting '{name}' needs confirmation",
                    hint="pass --yes to confirm without prompts",
                )
            if not typer.confirm(
                f"Delete '{name}', its keys and its history?", default=False, err=True
            ):
                raise typer.Exit(1)
        lifecycle.delete(session.client, session.state, name)
    output.message(f"Deleted '{name}'.")


def restore(json_out: Json = False) -> None:
    """Redeploy what local state says should run but the cluster lacks (after a cluster restart)."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session(start_local=True) as session:
        restored = lifecycle.restore(session.client, session.state)
    output.result(
        {"restored": restored},
        "Restored: " + ", ".join(restored) + ". `gale list` follows them to Deployed."
        if restored
        else "Nothing to restore: every deployment local state knows is on the cluster.",
    )


def export(
    name: Name,
    format: Annotated[str, typer.Option("--format", help="serve or rayservice.")] = "serve",
) -> None:
    """Print a deployment as a Serve config (`serve deploy`) or a KubeRay RayService manifest."""
    from gale_cli import export as exports
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    if format not in ("serve", "rayservice"):
        raise UsageError(
            f"unknown format '{format}'", hint="use --format serve or --format rayservice"
        )
    with open_session() as session:
        live = lifecycle.find(session.client, session.state, name)
    build = exports.serve_config if format == "serve" else exports.rayservice
    typer.echo(exports.dump(build(live.spec, live.keys)), nl=False)
