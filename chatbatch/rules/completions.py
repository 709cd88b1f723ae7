"""Pull the columns we sum and show (content, finish reason, usage) out of a chat completion.

The completion is untrusted: every value is bounded and typed before it reaches a column.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatbatch.untrusted import one_line

USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "billed_units",
)
# No answer has a trillion tokens; a larger (or negative) count is a provider's mistake, stored
# clamped and flagged. The bound keeps sums over millions of answers inside a 64-bit integer.
USAGE_MAX = 2**40
# What ``extract_fields`` takes from an answer besides usage: emptied for a new round, copied
# when an answer is reused.
ANSWER_COLUMNS = (
    "content",
    "finish_reason",
    "response_model",
    "tool_calls",
    "reasoning_content",
    "citations",
    "other_contents",
    "choices",
)
SHORT_TEXT_CHARS = 64  # finish_reason's column
MODEL_CHARS = 200


def extract_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Columns for a finished completion; missing usage counts as zero so sums stay exact, and
    ``usage_clamped`` says whether a usage number was out of range. Besides the first choice's
    content: its tool calls and reasoning, the web search's citations, and the content of every
    further choice (``n`` > 1), so an export drops nothing the model said."""
    choice = _first_choice(body)
    message = _dict(choice.get("message"))
    usage = usage_of(body)
    others = _further_contents(body)
    return {
        "content": _text_of(message.get("content")),
        "finish_reason": _str_or_none(choice.get("finish_reason"), SHORT_TEXT_CHARS),
        "response_model": _str_or_none(body.get("model"), MODEL_CHARS),
        "tool_calls": _json_list(message.get("tool_calls")),
        "reasoning_content": _text_of(message.get("reasoning_content")),
        "citations": _json_list(body.get("citations")),
        "other_contents": _json_list(others),
        "choices": len(others) + 1 if others else None,
        **{name: clamp_usage(value) for name, value in usage.items()},
        "usage_clamped": any(clamp_usage(value) != value for value in usage.values()),
    }


def _further_contents(body: dict[str, Any]) -> list[str | None]:
    """The content of every choice after the first, in order (None where a choice has none)."""
    choices = body.get("choices")
    if not isinstance(choices, list):
        return []
    return [_text_of(_dict(_dict(choice).get("message")).get("content")) for choice in choices[1:]]


def _json_list(value: Any) -> str | None:
    """A non-empty list as compact JSON text (NUL escaped, so any text column holds it); None
    for anything else."""
    if not isinstance(value, list) or not value:
        return None
    return orjson.dumps(value, default=str).decode()


def usage_of(body: dict[str, Any]) -> dict[str, int]:
    """The six usage numbers of a completion as reported, each an int (0 when absent or not a
    number)."""
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


def clamp_usage(value: int) -> int:
    """A usage number within 0 … ``USAGE_MAX``."""
    return min(max(value, 0), USAGE_MAX)


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
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    if isinstance(value, float) and abs(value) == float("inf"):
        return USAGE_MAX + 1 if value > 0 else -1
    return round(value)


def _str_or_none(value: Any, limit: int) -> str | None:
    return None if value is None else one_line(value, limit)
