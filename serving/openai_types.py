"""OpenAI request bodies and errors: parsing a request into a model, or an `APIError`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator
from pydantic import StrictFloat as Float
from pydantic import StrictInt as Int

_M = TypeVar("_M", bound=BaseModel)
MAX_STOP_LENGTH = 64  # as a deployment spec's stop sequences


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
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        parts_ok = isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in value
        )
        if not isinstance(value, str) and not parts_ok:
            raise ValueError('must be a string or a list of {"type": "text", "text": "..."} parts')
        return value

    def as_template_input(self) -> dict[str, str]:
        """The message as a chat template takes it: text content, known roles."""
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class Body(BaseModel):
    # OpenAI clients send extras (user, seed, logprobs...): ignore what we do not use.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    top_k: Int | None = Field(default=None, ge=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    n: Int | None = None
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

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


class ChatBody(Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)


class CompletionBody(Body):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]


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
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        # Union members add type tags ("str", "list[...]") to the location: drop them.
        where = ".".join(str(part) for part in first["loc"] if _is_field(part))
        message = first["msg"].removeprefix("Value error, ")
        raise APIError(
            400, f"{where}: {message}" if where else message, param=where or None
        ) from None


def _is_field(part: str | int) -> bool:
    return isinstance(part, int) or (part.isidentifier() and part not in _TYPE_TAGS)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}
