"""Pydantic schemas for one chat-completions request body, used to validate input lines.

Only the types of well-known fields are checked; every other field (GeekAI's extensions such as
``thinking``, ``enable_search``, ``search_config``) passes through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Message(BaseModel):
    """A chat message: a role and (usually) content."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: str = Field(min_length=1)
    content: str | list[Any] | None = None


class ChatBody(BaseModel):
    """The typed part of a chat-completions request; extra fields are allowed."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(default=None, min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    json_mode: bool | None = None
    enable_search: bool | None = None
    search_config: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    retries: int | None = None


def body_problems(body: dict[str, Any]) -> list[str]:
    """Readable reasons why ``body`` is not a valid chat request (empty when it is)."""
    try:
        ChatBody.model_validate(body)
    except ValidationError as exc:
        return [_describe(err) for err in exc.errors(include_url=False)]
    return []


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith(("list[", "str")))
    loc = loc or "body"
    if err["type"] == "missing":
        return f"{loc}: missing"
    if err["type"] == "too_short" and loc.endswith("messages"):
        return f"{loc}: must not be empty"
    return f"{loc}: {err['msg'].lower()}"
