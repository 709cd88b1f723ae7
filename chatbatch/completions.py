"""Pull the columns we sum and show (content, finish reason, usage) out of a chat completion."""

from __future__ import annotations

from typing import Any

USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "billed_units",
)


def extract_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Columns for a finished completion; missing usage counts as zero so sums stay exact."""
    choice = _first_choice(body)
    message = _dict(choice.get("message"))
    return {
        "content": _text_of(message.get("content")),
        "finish_reason": _str_or_none(choice.get("finish_reason")),
        "response_model": _str_or_none(body.get("model")),
        **usage_of(body),
    }


def usage_of(body: dict[str, Any]) -> dict[str, int]:
    """The six usage numbers of a completion, each an int (0 when absent)."""
    usage = _dict(body.get("usage"))
    prompt_details = _dict(usage.get("prompt_tokens_details"))
    completion_details = _dict(usage.get("completion_tokens_details"))
    return {
        "prompt_tokens": _int(usage.get("prompt_tokens")),
        "completion_tokens": _int(usage.get("completion_tokens")),
        "total_tokens": _int(usage.get("total_tokens")),
        "reasoning_tokens": _int(completion_details.get("reasoning_tokens")),
        "cached_tokens": _int(prompt_details.get("cached_tokens")),
        "billed_units": _int(usage.get("billed_units")),
    }


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def _text_of(content: Any) -> str | None:
    """Assistant content as text; list-of-parts content is joined. NUL is dropped (PostgreSQL
    text cannot hold it); the raw response keeps it."""
    if content is None:
        return None
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        content = "".join(str(p) for p in parts)
    return str(content).replace("\x00", "")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return round(value)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value).replace("\x00", "")
