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


def describe_progress(spec: DeploymentSpec, progress: Progress) -> str:
    """One status line: what the cluster is doing with a deployment."""
    if progress.waiting_for_hardware:
        return f"Waiting for hardware: {progress.waiting_for_hardware}"
    running = progress.replicas.get("RUNNING", 0)
    others = ", ".join(
        f"{n} {s.lower()}" for s, n in sorted(progress.replicas.items()) if s != "RUNNING"
    )
    from gale_cli.lifecycle import STATUS_WORDS

    word = STATUS_WORDS.get(progress.status, "Deploying")
    line = (
        f"{word}: {running} replica(s) running (min {spec.min_replicas}, max {spec.max_replicas})"
    )
    return f"{line}; {others}" if others else line


def wait_until_deployed(
    session: Session, spec: DeploymentSpec, timeout: float, since: float | None = None
) -> None:
    """Block until the deployment runs; Ctrl-C leaves it deploying and says how to follow it."""
    try:
        with output.Spinner(f"Deploying '{spec.name}'…") as spinner:
            session.client.wait_for_application(
                spec.name,
                timeout,
                on_update=lambda progress: spinner.update(describe_progress(spec, progress)),
                since=since,
            )
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
