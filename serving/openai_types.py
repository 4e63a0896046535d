"""OpenAI request bodies and errors: parsing a request into a model, or an `APIError`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import StrictFloat as Float
from pydantic import StrictInt as Int

_M = TypeVar("_M", bound=BaseModel)
MAX_STOP_LENGTH = 64  # as a deployment spec's stop sequences
# Most choices one request may ask for: `n` per prompt, times the completions prompts.
MAX_N = 8
MAX_CHOICES = 16
# What `{"type": "json_object"}` asks for: any JSON object (as vLLM's json_object does).
ANY_OBJECT = '{"type": "object"}'


class APIError(Exception):
    """An error to answer in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


def _unset(value: object) -> bool:
    return value is None


def _one_of(*neutral: object) -> Callable[[object], bool]:
    return lambda value: value is None or any(value == n for n in neutral)


# Every OpenAI field this deployment does not implement, with the values that ask for
# nothing beyond what gale does (accepted) and what the refusal tells a client to do.
Unsupported = dict[str, tuple[Callable[[object], bool], str]]
LEAVE_OUT = "leave it out"
COMMON_UNSUPPORTED: Unsupported = {}
CHAT_UNSUPPORTED: Unsupported = {
    **COMMON_UNSUPPORTED,
    "functions": (_unset, LEAVE_OUT + "; send tools (functions is deprecated)"),
    "function_call": (_unset, LEAVE_OUT + "; send tool_choice (function_call is deprecated)"),
    "modalities": (_one_of(["text"]), 'leave it out or send ["text"]'),
    "audio": (_unset, LEAVE_OUT),
    "prediction": (_unset, LEAVE_OUT),
    "reasoning_effort": (_unset, LEAVE_OUT),
    "verbosity": (_unset, LEAVE_OUT),
    "web_search_options": (_unset, LEAVE_OUT),
}
COMPLETION_UNSUPPORTED: Unsupported = {
    **COMMON_UNSUPPORTED,
    "suffix": (_one_of(""), "leave it out"),
    "best_of": (_one_of(1), "leave it out or send 1"),
}
# Fields of an OpenAI message beyond role and content; none is implemented.
MESSAGE_UNSUPPORTED = ("name", "function_call", "refusal", "audio")
# OpenAI fields that change nothing in the answer: accepted and dropped (docs/api.md).
DROPPED = ("user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier")


def unsupported(param: str, hint: str, what: str | None = None) -> APIError:
    """The refusal of a field gale does not implement, naming it and what to do instead."""
    message = f"{what or repr(param)} is not supported by this deployment; {hint}"
    return APIError(400, message, param=param)


_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDef


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # Before content: whether content may be null depends on it.
    tool_calls: list[ToolCall] | None = None
    # Null only where OpenAI allows it: an assistant message that carries tool calls.
    content: str | list[TextPart] | None = Field(default=None, validate_default=True)
    name: Any = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: Any = None
    audio: Any = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        if value is None:
            return value
        parts_ok = isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in value
        )
        if not isinstance(value, str) and not parts_ok:
            raise ValueError('must be a string or a list of {"type": "text", "text": "..."} parts')
        for part in value if isinstance(value, list) else []:
            for key in set(part) - {"type", "text"}:
                raise ValueError(f"unknown field '{key}' in a content part; leave it out")
        return value

    @field_validator("content")
    @classmethod
    def _needed(cls, value: object, info: ValidationInfo) -> object:
        if value is None and not (
            info.data.get("role") == "assistant" and info.data.get("tool_calls")
        ):
            raise ValueError("content is needed, unless an assistant message has tool_calls")
        return value

    @model_validator(mode="after")
    def _parts_of_its_role(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong to assistant messages only")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only it may carry one")
        return self

    def refuse_unsupported(self, where: str) -> None:
        """Raise an `APIError` for the first part of this message gale cannot honour."""
        if self.role == "function":
            hint = "send role 'tool' with tool_call_id (role 'function' is deprecated)"
            raise unsupported(f"{where}.role", hint, "role 'function'")
        for name in MESSAGE_UNSUPPORTED:
            if getattr(self, name) is not None:
                raise unsupported(f"{where}.{name}", LEAVE_OUT)

    def as_template_input(self) -> dict[str, Any]:
        """The message as a chat template takes it: text content, known roles."""
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content or [])
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    # `schema` would shadow a BaseModel method: the alias keeps OpenAI's name on the wire.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('json_schema is needed with "type": "json_schema", and only there')
        return self

    def json_schema_text(self) -> str | None:
        """The JSON schema the answer must match, as text; None for plain text.

        `json_object`, or `json_schema` without a schema, asks for any JSON object.
        """
        if self.type == "text":
            return None
        schema = self.json_schema.schema_ if self.json_schema is not None else None
        return json.dumps(schema) if schema is not None else ANY_OBJECT


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False
    include_obfuscation: StrictBool | None = None  # padding of streamed events: dropped


class Body(BaseModel):
    # A field gale does not know is refused, never ignored (docs/api.md lists them all).
    model_config = ConfigDict(extra="forbid")
    unsupported_fields: ClassVar[Unsupported] = COMMON_UNSUPPORTED

    model: str | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    top_k: Int | None = Field(default=None, ge=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    n: Int | None = Field(default=None, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    seed: Int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[Int, Field(ge=-100, le=100)]] | None = None
    # Accepted and dropped: they change nothing in the answer.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        if any(len(stop) > MAX_STOP_LENGTH for stop in stops):
            raise ValueError(f"stop sequences must be at most {MAX_STOP_LENGTH} characters")
        return value

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(
        cls, value: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        if value is not None and info.data.get("stream") is not True:
            raise ValueError("only allowed when stream is true")
        return value

    def refuse_unsupported(self) -> None:
        """Raise an `APIError` for the first field set to something gale does not implement."""
        for name, (accepted, hint) in self.unsupported_fields.items():
            if name in self.model_fields_set and not accepted(getattr(self, name)):
                raise unsupported(name, hint)


class ChatBody(Body):
    unsupported_fields: ClassVar[Unsupported] = CHAT_UNSUPPORTED

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _agrees_with_max_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        given = info.data.get("max_tokens")
        if value is not None and given is not None and value != given:
            raise ValueError(
                f"is {value} but max_tokens is {given}; send one of them "
                "(max_tokens is the older name of max_completion_tokens)"
            )
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("logprobs") is not True:
            raise ValueError("needs logprobs: true")
        return value

    def refuse_unsupported(self) -> None:
        """Raise an `APIError` for the first field or message part gale does not implement."""
        super().refuse_unsupported()
        for index, message in enumerate(self.messages):
            message.refuse_unsupported(f"messages.{index}")


class CompletionBody(Body):
    unsupported_fields: ClassVar[Unsupported] = COMPLETION_UNSUPPORTED

    prompt: str | list[str] | list[Int] | list[list[Int]]
    logprobs: Int | None = Field(default=None, ge=0, le=5)
    echo: StrictBool | None = None
    suffix: str | None = None
    best_of: Int | None = Field(default=None, ge=1, le=20)

    @field_validator("prompt")
    @classmethod
    def _not_empty_list(cls, value: object) -> object:
        if value == []:
            raise ValueError("must not be an empty list")
        return value

    @property
    def texts(self) -> list[str]:
        """The prompts' texts (one string is a list of one)."""
        return [self.prompt] if isinstance(self.prompt, str) else [str(p) for p in self.prompt]

    def refuse_unsupported(self) -> None:
        """Raise an `APIError` for the first field gale does not implement."""
        super().refuse_unsupported()
        if isinstance(self.prompt, list) and not all(isinstance(p, str) for p in self.prompt):
            what = "a prompt of token ids"
            raise unsupported("prompt", "send the prompt as a string (or a list of strings)", what)
        if len(self.texts) > MAX_CHOICES:
            message = f"prompt: at most {MAX_CHOICES} prompts per request"
            raise APIError(400, message, param="prompt")
        if self.echo and self.logprobs is not None:
            hint = "send echo or logprobs, not both (prompt tokens are not scored)"
            raise unsupported("echo", hint, "echo with logprobs")


def parse(model: type[_M], raw: bytes) -> _M:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise APIError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object")
    try:
        body = model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        # Union members add type tags ("str", "list[...]") to the location: drop them.
        where = ".".join(str(part) for part in first["loc"] if _is_field(part))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field; leave it out (gale's docs/api.md lists the fields it takes)"
        raise APIError(
            400, f"{where}: {message}" if where else message, param=where or None
        ) from None
    if isinstance(body, Body):
        body.refuse_unsupported()
    return body


def _is_field(part: str | int) -> bool:
    return isinstance(part, int) or (part.isidentifier() and part not in _TYPE_TAGS)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}
