"""`make demo`: the main job on the embedded default, with no prompts.

Starts the local Ray head if none runs, deploys the bundled model, asks it a
question through its endpoint with the official `openai` SDK, and prints the
answer, the endpoint and what to try next.
"""

from __future__ import annotations

import sys

from gale_cli import lifecycle, output
from gale_cli.commands.waiting import wait_for_key, wait_until_deployed
from gale_cli.errors import GaleError
from gale_cli.session import open_session
from serving.spec import DeploymentSpec

NAME = "smollm2-demo"
QUESTION = "Which city is the capital of France?"
SPEC = DeploymentSpec(
    name=NAME,
    description="The bundled SmolLM2 135M Instruct, deployed by `make demo`",
    tags=["demo"],
    model="smollm2-135m-instruct",
    temperature=0,
    max_length=64,
    hardware="cpu",
)


def run_demo(timeout: float = 600) -> str:
    """Deploy the bundled model (or reuse the demo deployment) and ask it the question."""
    from openai import OpenAI

    with open_session(start_local=True) as session:
        existing = lifecycle.all_deployments(session.client, session.state).get(NAME)
        if existing is None:
            output.message(f"Deploying the bundled model as '{NAME}'…")
            key = lifecycle.deploy(session.client, session.state, SPEC)
            since = None
        else:
            output.message(f"'{NAME}' exists ({existing.status}); using it with a new key.")
            change = lifecycle.plan_redeploy(session.client, session.state, NAME, existing.spec)
            since = (
                lifecycle.redeploy(session.client, session.state, change)
                if change.kind == "start"
                else None
            )
            key, _ = lifecycle.create_key(
                session.client, session.state, NAME, _fresh_key_name(existing)
            )
        wait_until_deployed(session, SPEC, timeout, since=since)
        url = lifecycle.endpoint(session.config.serve_url, NAME)
        wait_for_key(url, key)
    client = OpenAI(base_url=url, api_key=key, max_retries=5)
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": QUESTION}], temperature=0
    )
    answer = reply.choices[0].message.content or ""
    output.message(f"\nQ: {QUESTION}\nA: {answer.strip()}\n")
    output.message(f"Endpoint (OpenAI-compatible): {url}")
    output.message(f"API key for it (shown once): {key}")
    steps = [
        (f"gale chat {NAME}", "chat with it, streaming"),
        (f"gale describe {NAME}", "every parameter, its keys, its history"),
        (f"gale redeploy {NAME} --temperature 0.7 --yes", "change it in place"),
        ("gale deploy", "the wizard, for a deployment of your own"),
        (f"gale undeploy {NAME}", "free it (`gale cluster down` stops Ray)"),
    ]
    width = max(len(command) for command, _ in steps)
    output.message("\nNext (gale is .venv/bin/gale):")
    for command, what in steps:
        output.message(f"  {command.ljust(width)}  {what}")
    return answer


def _fresh_key_name(existing: lifecycle.Live) -> str:
    taken = {k.name for k in existing.keys}
    return next(f"demo-{n}" for n in range(1, len(taken) + 2) if f"demo-{n}" not in taken)


def main() -> int:
    """Run the demo; errors become a message and exit 1, as in `gale`."""
    try:
        run_demo()
    except GaleError as exc:
        output.error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
