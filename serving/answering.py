"""From a checked request to its answer: each choice's sampling, then the engine's output
in OpenAI's shape (whole, or streamed).

A request asks for one or more choices: `n` of them per prompt, and a completions
request may send several prompts (choice `i * n + j` answers prompt `i`). Each
choice is generated as a request of its own (the engines batch them together); a
seeded request's choice `j` samples with `seed + j`, so choices differ and the
same request gives the same choices again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from serving.engines.base import Completion, Engine, SamplingParams
from serving.engines.errors import EngineError
from serving.model_output import OutputFormat, Parsed, check_parsers
from serving.openai_types import MAX_CHOICES, APIError, Body
from serving.replica_state import ServingState
from serving.replies import Ask, Job, Reply, engine_failed, generate_all, start_stream
from serving.request_metrics import Measure
from serving.tools import ToolPlan, reasoning_parser

INT64 = 2**64
# No token of a model gale serves spans this many characters, so a prompt with more
# characters than this times the context cannot fit: refused before tokenizing it.
MAX_CHARS_PER_TOKEN = 32


def check_size(characters: int, context: int, param: str) -> None:
    """A 400 for a prompt too long in characters to fit the context in any tokenizing."""
    if characters > context * MAX_CHARS_PER_TOKEN:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens; the {param} has "
            f"{characters} characters, more than that many tokens can hold",
            param=param,
            code="context_length_exceeded",
        )


def check_model(body: Body, state: ServingState, engine: Engine) -> None:
    """A 404 unless the body names this deployment or its model (or nothing)."""
    if body.model is not None and body.model not in (state.name, engine.model_id):
        raise APIError(
            404,
            f"the model '{body.model}' does not exist here; this endpoint serves '{state.name}'",
            param="model",
            code="model_not_found",
        )


def choices(
    prompts: list[list[int]], params: list[SamplingParams], n: int, echo: list[str]
) -> list[Job]:
    """The jobs of `n` choices per prompt, choice `j` of a seeded request seeded `seed + j`."""
    if len(prompts) * n > MAX_CHOICES:
        message = (
            f"{len(prompts)} prompt(s) times n={n} asks for {len(prompts) * n} choices; "
            f"at most {MAX_CHOICES} per request"
        )
        raise APIError(400, message, param="n")
    jobs = []
    for prompt, sampling, before in zip(prompts, params, echo, strict=True):
        for j in range(n):
            seed = sampling.seed
            if seed is not None and j:  # wrapped into the signed 64-bit range
                seed = (seed + j + 2**63) % INT64 - 2**63
            jobs.append(Job(prompt, _with_seed(sampling, seed), before))
    return jobs


def _with_seed(params: SamplingParams, seed: int | None) -> SamplingParams:
    return params if seed == params.seed else replace(params, seed=seed)


async def answer(
    engine: Engine,
    reply: Reply,
    jobs: list[Job],
    prompt_tokens: int,
    measure: Measure,
) -> Any:
    """The request's answer: every job's choice, whole or streamed as `reply.ask` says."""
    if reply.ask.stream:
        return await start_stream(engine, jobs, reply, prompt_tokens, measure)
    done = await answer_whole(engine, jobs, measure, prompt_tokens)
    completion = sum(d.completion_tokens for d in done)
    shaped = [
        reply.choice(i, d, job.echo) for i, (job, d) in enumerate(zip(jobs, done, strict=True))
    ]
    return reply.whole(shaped, prompt_tokens, completion)


async def answer_whole(
    engine: Engine, jobs: list[Job], measure: Measure, prompt_tokens: int | None = None
) -> list[Completion]:
    """Every job's whole completion, measured; an engine failure is a 503."""
    try:
        done = await generate_all(engine, jobs)
    except EngineError as error:
        raise engine_failed(error) from None
    prompt = done[0].prompt_tokens if prompt_tokens is None else prompt_tokens
    measure.tokens(prompt, sum(d.completion_tokens for d in done))
    return done


def reader(
    engine: Engine, tools: ToolPlan, parallel_tool_calls: bool | None
) -> Callable[[str], Parsed] | None:
    """How a chat answer is read in the model's own format (vLLM's parsers): tool calls
    with `tool_choice: "auto"`, reasoning on a reasoning model; None for plain text."""
    if tools.forces_call:
        return None
    reasoning = reasoning_parser(engine.model_id)
    if reasoning is not None:
        try:
            check_parsers(None, reasoning)
        except APIError:  # no vLLM here: the thinking stays in the content, as before
            reasoning = None
    shape = OutputFormat(
        tool_parser=tools.auto_format,
        reasoning_parser=reasoning,
        tools=tools.tools if tools.auto_format else (),
        parallel_tool_calls=parallel_tool_calls is not False,
    )
    if not shape.parses:
        return None
    check_parsers(shape.tool_parser, None)
    return partial(shape.parse, getattr(engine, "tokenizer", None))


def ask_of(body: Body, *, forced_call: bool = False, logprobs: int | None = None) -> Ask:
    """What the body asks of each choice's answer."""
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return Ask(
        forced_call=forced_call,
        logprobs=logprobs is not None,
        stream=body.stream,
        include_usage=include_usage,
    )


def sampling(
    state: ServingState,
    body: Body,
    max_tokens: int | None,
    prompt_len: int,
    context: int,
    prompt_param: str,
    json_schema: str | None,
    tokens_param: str = "max_tokens",
    vocab_size: int = 0,
    logprobs: int | None = None,
    skip_special_tokens: bool = True,
) -> SamplingParams:
    """One prompt's sampling: the body's fields over the deployment's, checked against the
    deployment's maximum length and the model's context."""
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
        logprobs=logprobs,
        skip_special_tokens=skip_special_tokens,
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
