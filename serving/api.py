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
from jinja2 import TemplateError
from starlette.exceptions import HTTPException

from serving.admission import LedgerMetrics, Limiter, LimitRequests
from serving.engines.base import Engine, SamplingParams
from serving.engines.errors import EngineError
from serving.engines.grammar import check_schema
from serving.keys import match_key
from serving.metrics import Metrics, NoMetrics
from serving.openai_types import APIError, Body, ChatBody, CompletionBody, parse
from serving.replica_state import ServingState
from serving.replies import Reply, engine_failed, start_stream
from serving.request_metrics import Measure, MeasureRequests, measure_of
from serving.tools import (
    CallDeltas,
    ToolPlan,
    plan,
    template_messages,
    tool_call,
    tool_call_format,
)

MAX_BODY_BYTES = 1024 * 1024
# The whole body must arrive within this time: a client trickling it would hold a slot.
BODY_DEADLINE_S = 30.0
# No token of a model gale serves spans this many characters, so a prompt with more
# characters than this times the context cannot fit: refused before tokenizing it.
MAX_CHARS_PER_TOKEN = 32
UNAUTHORIZED = "Invalid or missing API key. Send it as 'Authorization: Bearer <key>'."
# Serve's replica logger: lines land in the replica's log.
logger = logging.getLogger("ray.serve")


def build_api(
    engine: Engine,
    state: ServingState,
    metrics: Metrics | None = None,
    limiter: Limiter | None = None,
) -> FastAPI:
    """The ASGI app serving `engine` under OpenAI's routes, governed by `state`, measured.

    With a `limiter`, each key's limits are enforced and its usage counted (`serving.admission`).
    """
    app = FastAPI(title="gale", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = metrics or NoMetrics()
    if limiter is not None:
        # Added first, so it runs inside the measuring: its 429s are counted like any answer.
        app.add_middleware(LimitRequests, limiter=limiter)
        metrics = LedgerMetrics(metrics, limiter)
    app.add_middleware(MeasureRequests, metrics=metrics, state=state)
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
        tokens = body.max_completion_tokens or body.max_tokens
        tokens_param = (
            "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
        )
        tools = plan(body, tool_call_format(engine.model_id))
        schema = (
            _checked(tools.call_schema, "tools", "a function's parameters are")
            if tools.call_schema is not None
            else _response_schema(body)
        )
        native = engine.template_knows_tools
        messages = template_messages(body.messages, tools.tools, native=native)
        _check_size(sum(len(m["content"]) for m in messages), engine.context_length, "messages")
        shown = [tool.model_dump(exclude_none=True) for tool in tools.tools] if native else None
        # Off the event loop: the streams this replica serves go on meanwhile.
        try:
            prompt = await asyncio.to_thread(engine.encode_chat, messages, shown)
        except EngineError as error:
            raise APIError(400, str(error), param="messages") from None
        except TemplateError as error:
            message = f"the model's chat template refused these messages: {error}"
            raise APIError(400, message, param="messages") from None
        return await _answer(
            engine,
            state,
            measure_of(request),
            body,
            prompt,
            tokens,
            "messages",
            chat=True,
            json_schema=schema,
            tools=tools,
            tokens_param=tokens_param,
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        _authorize(request, state)
        body = parse(CompletionBody, await _read_body(request))
        _check_size(len(body.text), engine.context_length, "prompt")
        prompt = await asyncio.to_thread(engine.encode_text, body.text)
        measure, tokens = measure_of(request), body.max_tokens
        return await _answer(engine, state, measure, body, prompt, tokens, "prompt", chat=False)

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


def _response_schema(body: ChatBody) -> str | None:
    schema = body.response_format.json_schema_text() if body.response_format else None
    if schema is None:
        return None
    return _checked(schema, "response_format", "response_format.json_schema.schema is")


def _checked(schema: str, param: str, what: str) -> str:
    try:
        check_schema(schema)
    except ValueError as error:
        message = f"{what} not a JSON schema gale can follow: {error}"
        raise APIError(400, message, param=param) from None
    return schema


def _check_size(characters: int, context: int, param: str) -> None:
    if characters > context * MAX_CHARS_PER_TOKEN:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens; the {param} has "
            f"{characters} characters, more than that many tokens can hold",
            param=param,
            code="context_length_exceeded",
        )


def _sampling(
    state: ServingState,
    body: Body,
    max_tokens: int | None,
    prompt_len: int,
    context: int,
    prompt_param: str,
    json_schema: str | None,
    tokens_param: str = "max_tokens",
    vocab_size: int = 0,
) -> SamplingParams:
    defaults = state.parameters
    if prompt_len == 0:
        raise APIError(400, f"the {prompt_param} is empty", param=prompt_param)
    if max_tokens is not None and max_tokens > defaults.max_length:
        raise APIError(
            400,
            f"{tokens_param} is {max_tokens}, above this deployment's limit of "
            f"{defaults.max_length}",
            param=tokens_param,
        )
    room = context - prompt_len
    if max_tokens is None and room >= 1:
        max_tokens = min(defaults.max_length, room)
    if max_tokens is None or max_tokens > room:
        wanted = max_tokens or defaults.max_length
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens; you "
            f"asked for {prompt_len + wanted} ({prompt_len} in the {prompt_param}, "
            f"{wanted} in the completion)",
            param=prompt_param,
            code="context_length_exceeded",
        )
    stop = defaults.stop if body.stop is None else body.stop
    return SamplingParams(
        temperature=defaults.temperature if body.temperature is None else body.temperature,
        top_p=defaults.top_p if body.top_p is None else body.top_p,
        top_k=defaults.top_k if body.top_k is None else body.top_k,
        max_tokens=max_tokens,
        stop=tuple([stop] if isinstance(stop, str) else stop),
        json_schema=json_schema,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias(body, vocab_size),
    )


def _logit_bias(body: Body, vocab_size: int) -> tuple[tuple[int, float], ...]:
    pairs = []
    for key, bias in (body.logit_bias or {}).items():
        # Bounded in length: int() refuses very long digit strings, and no vocabulary is that big.
        token = int(key) if key.isascii() and key.isdigit() and len(key) <= 12 else -1
        if not 0 <= token < vocab_size:
            message = (
                f"logit_bias: {key!r} is not a token id of this model; "
                f"send token ids from 0 to {vocab_size - 1} as strings"
            )
            raise APIError(400, message, param="logit_bias")
        if bias:
            pairs.append((token, float(bias)))
    return tuple(pairs)


async def _answer(
    engine: Engine,
    state: ServingState,
    measure: Measure,
    body: Body,
    prompt: list[int],
    max_tokens: int | None,
    prompt_param: str,
    chat: bool,
    json_schema: str | None = None,
    tools: ToolPlan | None = None,
    tokens_param: str = "max_tokens",
) -> Any:
    if body.model is not None and body.model not in (state.name, engine.model_id):
        raise APIError(
            404,
            f"the model '{body.model}' does not exist here; this endpoint serves '{state.name}'",
            param="model",
            code="model_not_found",
        )
    context = engine.context_length
    params = _sampling(
        state,
        body,
        max_tokens,
        len(prompt),
        context,
        prompt_param,
        json_schema,
        tokens_param,
        engine.vocab_size if body.logit_bias else 0,
    )
    reply = Reply(state.name, chat)
    if tools is not None and tools.call_schema is not None:
        return await _call_tool(engine, prompt, params, reply, body, measure)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await start_stream(engine.stream(prompt, params), reply, include_usage, measure)
    try:
        done = await engine.generate(prompt, params)
    except EngineError as error:
        raise engine_failed(error) from None
    measure.tokens(done.prompt_tokens, done.completion_tokens)
    return reply.whole(done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens)


async def _call_tool(
    engine: Engine,
    prompt: list[int],
    params: SamplingParams,
    reply: Reply,
    body: Body,
    measure: Measure,
) -> Any:
    """Answer a forced tool call: `message.tool_calls`, or its deltas as they are decoded."""
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        stream = engine.stream(prompt, params)
        return await start_stream(stream, reply, include_usage, measure, CallDeltas())
    try:
        done = await engine.generate(prompt, params)
    except EngineError as error:
        raise engine_failed(error) from None
    measure.tokens(done.prompt_tokens, done.completion_tokens)
    usage = (done.prompt_tokens, done.completion_tokens)
    if done.finish_reason != "stop":  # cut off by max_tokens: no call, and say so
        return reply.whole(done.text, done.finish_reason, *usage)
    message = {"role": "assistant", "content": None, "tool_calls": [tool_call(done.text)]}
    return reply.whole(None, "tool_calls", *usage, message=message)


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
