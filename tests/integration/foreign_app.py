"""A tiny non-gale Serve application, deployed beside gale's to prove gale keeps it."""

from __future__ import annotations

import os

from ray import serve
from starlette.requests import Request


@serve.deployment
class Foreign:
    """Answers with its pid, so a test can tell whether the replica was restarted."""

    async def __call__(self, request: Request) -> dict[str, object]:
        return {"app": "foreign", "pid": os.getpid()}


app = Foreign.bind()
