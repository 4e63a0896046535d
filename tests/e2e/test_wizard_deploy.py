"""`gale deploy` typed into a real pseudo-terminal, deploying for real onto the session cluster."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from devstack import BUNDLED_MODEL
from gale_cli.cluster import ServeClient
from serving import catalog
from tests.conftest import DEPLOY_TIMEOUT_S
from tests.e2e.test_wizard_pty import ENTER, PARAMETERS, REVIEW_MENU, Terminal

pytestmark = [pytest.mark.cluster, pytest.mark.model]

NAME = "wizard-bot"
KEY_LINE = re.compile(r"API key \(shown once; store it now\): (gale-[A-Za-z0-9_-]+)")
ENDPOINT_LINE = re.compile(r"Endpoint: (http://\S+/v1)")


def test_a_person_deploys_for_real_with_the_wizard(
    ray_cluster: ServeClient, delete_after: Callable[[str], str]
) -> None:
    delete_after(NAME)
    t = Terminal(["deploy"], Path(os.environ["GALE_HOME"]))
    try:
        t.choose("Model", list(catalog.models()).index(BUNDLED_MODEL))
        t.type("Deployment name", NAME)
        t.type("Description", "deployed from a terminal")
        t.answer("Tags (comma-separated)", ENTER)
        t.choose("General details: Next or Back?", 0)
        t.type("Temperature", "0")
        t.type("Maximum length", "32")
        for label in PARAMETERS[2:]:
            t.answer(label, ENTER)
        t.choose("Parameters: Next or Back?", 0)
        t.choose("Hardware", list(catalog.hardware()).index("cpu"))
        t.choose("Hardware: Next or Back?", 0)
        t.wait("fits:")
        t.choose("Review", REVIEW_MENU.index("Deploy"))
        t.answer("I accept all the terms and conditions", "y")
        t.child.expect_exact(f"'{NAME}' is Deployed.", timeout=DEPLOY_TIMEOUT_S)
        screen = "".join(t.transcript) + t.child.before + t.child.after
        status, rest = t.finish()
    finally:
        if t.child.isalive():
            t.child.terminate(force=True)
    assert status == 0, rest

    key_match, endpoint_match = KEY_LINE.search(screen), ENDPOINT_LINE.search(screen)
    assert key_match and endpoint_match, screen[-2000:]
    key, url = key_match[1], endpoint_match[1]
    assert url == f"{ray_cluster.config.serve_url}/{NAME}/v1"

    app = ray_cluster.get_application(NAME)
    assert app is not None and app["status"] == "RUNNING"
    reply = httpx.post(
        f"{url}/chat/completions",
        json={
            "model": NAME,
            "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
            "max_tokens": 24,
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
        trust_env=False,
    )
    assert reply.status_code == 200, reply.text
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]
    wrong = httpx.get(
        f"{url}/models", headers={"Authorization": "Bearer gale-wrong"}, trust_env=False
    )
    assert wrong.status_code == 401
