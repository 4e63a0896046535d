"""A chat request made ready to answer: its tools, its grammar, its prompt, its choices.

Chat completions and the Responses route (translated into a chat body) both come
through `prepare_chat`, so they follow the same rules on both engines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from jinja2 import TemplateError

from serving.answering import ask_of, check_model, check_size, choices, reader, sampling
from serving.engines.base import Engine
from serving.engines.errors import EngineError
from serving.engines.grammar import check_schema
from serving.openai_types import APIError, ChatBody
from serving.replica_state import ServingState
from serving.replies import Ask, Job
from serving.tools import ToolPlan, plan, template_messages, tool_call_format


@dataclass
class PreparedChat:
    """What answering a chat request needs: its choices' jobs and how to shape them."""

    jobs: list[Job]
    prompt_tokens: int
    ask: Ask
    tools: ToolPlan


async def prepare_chat(engine: Engine, state: ServingState, body: ChatBody) -> PreparedChat:
    """Check a chat body against the deployment and the model, and build its jobs."""
    tokens = body.max_completion_tokens or body.max_tokens
    tokens_param = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
    tools = plan(body, tool_call_format(engine.model_id))
    schema = (
        _checked(tools.call_schema, "tools", "a function's parameters are")
        if tools.call_schema is not None
        else _response_schema(body)
    )
    native = engine.template_knows_tools
    messages = template_messages(body.messages, tools.tools, native=native)
    check_size(sum(len(m["content"]) for m in messages), engine.context_length, "messages")
    shown = [tool.model_dump(exclude_none=True) for tool in tools.tools] if native else None
    # Off the event loop: the streams this replica serves go on meanwhile.
    try:
        prompt = await asyncio.to_thread(engine.encode_chat, messages, shown)
    except EngineError as error:
        raise APIError(400, str(error), param="messages") from None
    except TemplateError as error:
        message = f"the model's chat template refused these messages: {error}"
        raise APIError(400, message, param="messages") from None
    check_model(body, state, engine)
    top = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling(
        state,
        body,
        tokens,
        len(prompt),
        engine.context_length,
        "messages",
        schema,
        tokens_param,
        engine.vocab_size if body.logit_bias else 0,
        logprobs=top,
        skip_special_tokens=tools.auto_format is None,
    )
    ask = ask_of(body, forced_call=tools.forces_call, logprobs=top)
    ask.read = reader(engine, tools, body.parallel_tool_calls)
    jobs = choices([prompt], [params], body.n or 1, [""])
    return PreparedChat(jobs, len(prompt), ask, tools)


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
