"""Following a deployment to "Deployed" with a live status line."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gale_cli import output
from gale_cli.errors import GaleError

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    from gale_cli.progress import Progress
    from gale_cli.session import Session
    from serving.spec import DeploymentSpec


def describe_progress(spec: DeploymentSpec, progress: Progress, now: float | None = None) -> str:
    """One status line: what the cluster is doing with a deployment, with each starting
    replica's phase (and its time so far, given `now`)."""
    from gale_cli.startup import WAITING, describe, duration

    starting = [describe(start, now) for start in progress.starting if start.phase != WAITING]
    phases = f" — {'; '.join(starting)}" if starting else ""
    if progress.waiting_for_hardware:
        waited = [s.since for s in progress.starting if s.phase == WAITING and s.since]
        for_how_long = f" (for {duration(now - min(waited))})" if now is not None and waited else ""
        return f"Waiting for hardware: {progress.waiting_for_hardware}{for_how_long}{phases}"
    running = progress.replicas.get("RUNNING", 0)
    others = ", ".join(
        f"{n} {s.lower()}" for s, n in sorted(progress.replicas.items()) if s != "RUNNING"
    )
    from gale_cli.lifecycle import STATUS_WORDS

    word = STATUS_WORDS.get(progress.status, "Deploying")
    line = (
        f"{word}: {running} replica(s) running (min {spec.min_replicas}, max {spec.max_replicas})"
    )
    return (f"{line}; {others}" if others else line) + phases


def wait_until_deployed(
    session: Session, spec: DeploymentSpec, timeout: float, since: float | None = None
) -> None:
    """Block until the deployment runs; Ctrl-C leaves it deploying and says how to follow it."""
    from gale_cli.errors import DeployFailed
    from gale_cli.startup import StartupReader

    reader = StartupReader(session.client)

    def show(spinner: output.Spinner, progress: Progress) -> None:
        # Times change every poll; without a terminal a line is printed only when the
        # rest of it changes.
        now = time.time()
        spinner.update(
            describe_progress(spec, progress, now), key=describe_progress(spec, progress)
        )

    try:
        with output.Spinner(f"Deploying '{spec.name}'…") as spinner:
            session.client.wait_for_application(
                spec.name,
                timeout,
                on_update=lambda progress: show(spinner, progress),
                since=since,
                observe=reader.progress,
                every_poll=True,
            )
    except DeployFailed as failed:
        failure = reader.failure(spec.name, since)
        if failure is None:
            raise
        raise DeployFailed(
            failure.text(spec.name), hint=f"`gale logs {spec.name}` shows the replicas' logs"
        ) from failed
    except KeyboardInterrupt:
        output.message(
            f"Stopped waiting. The cluster goes on deploying '{spec.name}': `gale status {spec.name}`."
        )
        raise


def wait_for_key(url: str, key: str, timeout: float = 15) -> None:
    """A new key reaches replicas in place within seconds: wait until it opens the endpoint."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, trust_env=False) as http:
        while time.monotonic() < deadline:
            try:
                if (
                    http.get(
                        f"{url}/models", headers={"Authorization": f"Bearer {key}"}
                    ).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    raise GaleError(
        f"the endpoint {url} did not accept a new key within {timeout:g}s",
        hint="`gale status` shows its state",
    )
