"""Pydantic schemas for one chat-completions request body, used to validate input lines.

The types of well-known fields are checked, and what the provider would refuse or misread: an
unknown role, a message without content, a parameter out of its range. Every other field
(GeekAI's extensions such as ``thinking``, ``enable_search``, ``search_config``) passes through
untouched.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = get_args(Role)


class Message(BaseModel):
    """A chat message: a role and content (a text or a non-empty list of parts), which only an
    assistant message calling tools may leave out; a tool message names the call it answers."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: str | list[Any] | None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> Message:
        """Refuse what the provider would: see ``message_problem``."""
        problem = message_problem(self.role, self.content, self.model_extra or {})
        if problem:
            field, reason = problem
            raise PydanticCustomError(
                "message", "{field}: {reason}", {"field": field, "reason": reason}
            )
        return self


def message_problem(role: str, content: Any, extra: dict[str, Any]) -> tuple[str, str] | None:
    """(field, reason) why a message with a valid role and content type would be refused, None
    when it is fine: content missing, an empty list of parts or a part that is not an object,
    a tool message without the ``tool_call_id`` it answers."""
    if content is None and not (role == "assistant" and calls_tools(extra)):
        if role == "assistant":
            return "content", "missing (an assistant message needs it unless it has tool_calls)"
        return "content", f"missing (a {role} message needs a text or a list of parts)"
    if isinstance(content, list):
        if not content:
            return "content", "must not be an empty list of parts"
        if not all(isinstance(part, dict) for part in content):
            return "content", 'every part must be an object, such as {"type": "text", "text": …}'
    call_id = extra.get("tool_call_id")
    if role == "tool" and not (isinstance(call_id, str) and call_id):
        return "tool_call_id", "a tool message needs the id of the call it answers (a string)"
    return None


def calls_tools(extra: dict[str, Any]) -> bool:
    """Whether an assistant message stands for tool calls (``tool_calls``, or the older
    ``function_call``), so it may have no content."""
    tool_calls = extra.get("tool_calls")
    function_call = extra.get("function_call")
    return (isinstance(tool_calls, list) and bool(tool_calls)) or isinstance(function_call, dict)


class ChatBody(BaseModel):
    """The typed part of a chat-completions request; extra fields are allowed."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(default=None, min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
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
    if err["type"] == "message":  # Message's own checks name the field themselves
        return f"{loc}.{err['ctx']['field']}: {err['ctx']['reason']}"
    return f"{loc}: {err['msg'].lower()}"
