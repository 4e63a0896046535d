"""The OpenAI-compatible FastAPI app in front of an engine: routes, key check, error shape.

Every error leaves through `_error_response` in OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`. Bad input is a 4xx and never
stops the server. Bodies are read and validated here (not by FastAPI's
signature binding) so the key is checked before a body is read or parsed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.admission import LedgerMetrics, Limiter, LimitRequests
from serving.answering import answer, ask_of, check_model, check_size, choices, sampling
from serving.chat import prepare_chat
from serving.engines.base import Engine
from serving.health import Progress
from serving.keys import match_key
from serving.metrics import Metrics, NoMetrics
from serving.openai_types import APIError, ChatBody, CompletionBody, parse
from serving.relay import BODY_DEADLINE_S, MAX_BODY_BYTES
from serving.replica_state import ServingState
from serving.replies import Reply
from serving.request_metrics import MeasureRequests, measure_of
from serving.responses_api import add_responses_route

UNAUTHORIZED = "Invalid or missing API key. Send it as 'Authorization: Bearer <key>'."
# Serve's replica logger: lines land in the replica's log.
logger = logging.getLogger("ray.serve")


def build_api(
    engine: Engine,
    state: ServingState,
    metrics: Metrics | None = None,
    limiter: Limiter | None = None,
    progress: Progress | None = None,
) -> FastAPI:
    """The ASGI app serving `engine` under OpenAI's routes, governed by `state`, measured.

    With a `limiter`, each key's limits are enforced and its usage counted (`serving.admission`);
    answers that go out are noted in `progress` (`serving.health`).
    """
    app = FastAPI(title="gale", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = metrics or NoMetrics()
    if limiter is not None:
        # Added first, so it runs inside the measuring: its 429s are counted like any answer.
        app.add_middleware(LimitRequests, limiter=limiter)
        metrics = LedgerMetrics(metrics, limiter)
    app.add_middleware(MeasureRequests, metrics=metrics, state=state, progress=progress)
    app.add_exception_handler(APIError, _error_response)
    app.add_exception_handler(HTTPException, _error_response)
    app.add_exception_handler(RequestValidationError, _error_response)
    # Anything unforeseen still answers in the envelope (as a 500), never as plain text.
    app.add_exception_handler(Exception, _error_response)
    # Starlette's redirect would take its Location from the Host header: a 404 instead.
    app.router.redirect_slashes = False
    app.state.body_deadline_s = BODY_DEADLINE_S

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": state.name,
            "device": engine.device_description,
            "batch_size": engine.batch_size,
        }

    def card() -> dict[str, Any]:
        return {
            "id": state.name,
            "object": "model",
            "created": 0,
            "owned_by": "gale",
            "root": engine.model_id,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request, state)
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id}")
    async def model(request: Request, model_id: str) -> dict[str, Any]:
        _authorize(request, state)
        if model_id != state.name:
            raise APIError(
                404,
                f"the model '{model_id}' does not exist here; this endpoint serves '{state.name}'",
                param="model",
                code="model_not_found",
            )
        return card()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        _authorize(request, state)
        body = parse(ChatBody, await _read_body(request))
        prepared = await prepare_chat(engine, state, body)
        reply = Reply(state.name, True, prepared.ask)
        return await answer(
            engine, reply, prepared.jobs, prepared.prompt_tokens, measure_of(request)
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        _authorize(request, state)
        body = parse(CompletionBody, await _read_body(request))
        check_model(body, state, engine)
        texts = body.texts
        for text in texts:
            check_size(len(text), engine.context_length, "prompt")
        prompts = [await asyncio.to_thread(engine.encode_text, text) for text in texts]
        vocab = engine.vocab_size if body.logit_bias else 0
        params = [
            sampling(
                state,
                body,
                body.max_tokens,
                len(prompt),
                engine.context_length,
                "prompt",
                None,
                vocab_size=vocab,
                logprobs=body.logprobs,
            )
            for prompt in prompts
        ]
        echo = texts if body.echo else [""] * len(texts)
        reply = Reply(state.name, False, ask_of(body, logprobs=body.logprobs))
        jobs = choices(prompts, params, body.n or 1, echo)
        used = sum(len(prompt) for prompt in prompts)
        return await answer(engine, reply, jobs, used, measure_of(request))

    add_responses_route(app, engine, state, _authorize, _read_body)
    return app


def _authorize(request: Request, state: ServingState) -> None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or match_key(key.strip(), state.keys) is None:
        raise APIError(401, UNAUTHORIZED, code="invalid_api_key", type="authentication_error")


async def _read_body(request: Request) -> bytes:
    too_large = APIError(
        413, f"request body is larger than {MAX_BODY_BYTES} bytes", code="request_too_large"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    deadline: float = request.app.state.body_deadline_s
    try:
        async with asyncio.timeout(deadline):
            async for piece in request.stream():
                body += piece
                if len(body) > MAX_BODY_BYTES:
                    raise too_large
    except TimeoutError:
        message = f"the request body did not arrive within {deadline:g} seconds"
        raise APIError(408, message, code="request_timeout") from None
    return bytes(body)


async def _error_response(request: Request, error: Exception) -> JSONResponse:
    """Turn any error a route raised into OpenAI's envelope (the one place that does)."""
    headers: dict[str, str] = {}
    if isinstance(error, APIError):
        failure = error
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(error, RequestValidationError):
        failure = APIError(400, str(error.errors()[:1]))
    elif isinstance(error, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        path = request.url.path
        hint = f"; did you mean {path.rstrip('/')}?" if path.endswith("/") and path != "/" else ""
        message = {
            404: f"no route {request.method} {path}{hint}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        failure = APIError(error.status_code, message, code=code)
        headers.update(error.headers or {})
    else:
        logger.error("gale: %s %s failed", request.method, request.url.path, exc_info=error)
        failure = APIError(500, "internal error", type="server_error")
    return JSONResponse(failure.body(), status_code=failure.status, headers=headers)
