"""`gale chat NAME [PROMPT]`: talk to a deployment through its endpoint, streaming."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from gale_cli import output
from gale_cli.commands.options import Name
from gale_cli.errors import GaleError

# Imported where used: `gale --help` must not pay for them.
if TYPE_CHECKING:
    import httpx

    from gale_cli.session import Session

KEY_NAME = "gale-chat"
# The session key stops working on its own even if this process is killed before revoking it.
KEY_LIFETIME_S = 8 * 3600


def chat(
    name: Name,
    prompt: Annotated[
        str | None, typer.Argument(help="Ask once and exit; without it, chat.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="GALE_API_KEY", help="A key of the deployment (default: a temporary one)."
        ),
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
) -> None:
    """Chat with a deployment; replies stream as they are generated."""
    from gale_cli import lifecycle
    from gale_cli.session import open_session

    with open_session() as session:
        lifecycle.find(session.client, session.state, name)
        url = lifecycle.endpoint(session.config.serve_url, name)
        with _key_for(session, name, url, api_key) as key:
            _converse(url, key, name, prompt, system)


@contextmanager
def _key_for(session: Session, name: str, url: str, api_key: str | None) -> Iterator[str]:
    """The key given, or one only for this chat, revoked when it ends: gale keeps no keys."""
    from gale_cli import lifecycle
    from gale_cli.commands.waiting import wait_for_key

    if api_key:
        yield api_key
        return
    # Expires by itself too, in case this process dies before revoking it.
    key, temporary = lifecycle.create_key(
        session.client,
        session.state,
        name,
        f"{KEY_NAME}-{secrets.token_hex(3)}",
        expires_in=KEY_LIFETIME_S,
    )
    try:
        wait_for_key(url, key)
        yield key
    finally:
        lifecycle.revoke_key(session.client, session.state, name, temporary.id)


def _converse(url: str, key: str, name: str, prompt: str | None, system: str | None) -> None:
    """Ask `prompt` once, or read questions from stdin until an empty line or Ctrl-D."""
    import httpx

    messages = [{"role": "system", "content": system}] if system else []
    with httpx.Client(timeout=httpx.Timeout(10, read=300), trust_env=False) as http:
        if prompt is not None:
            messages.append({"role": "user", "content": prompt})
            _reply(http, url, key, name, messages)
            return
        output.message(f"Chatting with '{name}'. Ctrl-D or an empty line ends.")
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if not line.strip():
                break
            messages.append({"role": "user", "content": line})
            messages.append(
                {"role": "assistant", "content": _reply(http, url, key, name, messages)}
            )


def _reply(
    http: httpx.Client, url: str, key: str, model: str, messages: list[dict[str, str]]
) -> str:
    """Stream one reply to stdout; return its text."""
    parts = []
    for piece in _stream(http, url, key, model, messages):
        parts.append(piece)
        typer.echo(piece, nl=False)
    typer.echo()
    return "".join(parts)


def _stream(
    http: httpx.Client, url: str, key: str, model: str, messages: list[dict[str, str]]
) -> Iterator[str]:
    import httpx

    body = {"model": model, "messages": messages, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with http.stream("POST", f"{url}/chat/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise GaleError(
                    f"the endpoint answered {response.status_code}: {_error_text(response.text)}"
                )
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise GaleError(f"the model failed mid-reply: {event['error'].get('message')}")
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
    except httpx.TransportError as exc:
        raise GaleError(
            f"cannot reach {url}: {exc}", hint="`gale status` shows whether it is deployed"
        ) from None


def _error_text(body: str) -> str:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:200]
