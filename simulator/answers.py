"""Answers derived deterministically from the request, so tests can prove each result landed on
its own request. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

LABELS = ("positive", "negative", "neutral")
TRANSPORT_KEYS = frozenset({"background", "stream"})
JSON_FORMATS = ("json_object", "json_schema")
NUL = "\x00"


def request_fingerprint(body: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``body`` without the transport-only keys."""
    canonical = {k: v for k, v in body.items() if k not in TRANSPORT_KEYS}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def message_text(content: Any) -> str:
    """The text of a message's content, which may be a string, a list of parts, or null."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def wants_json(body: dict[str, Any]) -> bool:
    """True when the request asks for a JSON answer (GeekAI json_mode or response_format)."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return bool(body.get("json_mode")) or kind in JSON_FORMATS


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed messages of ``body``; anything else is ignored."""
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def expected_content(body: dict[str, Any], *, fingerprint: str | None = None) -> str:
    """The assistant content the simulator returns for ``body``."""
    fp = fingerprint or request_fingerprint(body)
    if wants_json(body):
        label = LABELS[int(fp[6:8], 16) % len(LABELS)]
        confidence = round(0.5 + (int(fp[8:10], 16) % 50) / 100, 2)
        return json.dumps({"fingerprint": fp[:16], "label": label, "confidence": confidence})
    users = [m for m in _messages(body) if m.get("role") == "user"]
    last = message_text(users[-1].get("content")) if users else ""
    return f"sim:{fp[:16]}: {last[:40]}"


def expected_reasoning(body: dict[str, Any], *, fingerprint: str | None = None) -> str | None:
    """The ``reasoning_content`` for a request with ``thinking``, else None."""
    if "thinking" not in body:
        return None
    fp = fingerprint or request_fingerprint(body)
    return f"sim reasoning for {fp[:16]}"


def expected_usage(body: dict[str, Any], *, fingerprint: str | None = None) -> dict[str, Any]:
    """The usage object (GeekAI shape) the simulator returns for ``body``."""
    fp = fingerprint or request_fingerprint(body)
    messages = _messages(body)
    prompt = 1 + sum(len(message_text(m.get("content"))) for m in messages) // 4
    completion = 5 + int(fp[:4], 16) % 50
    reasoning = 8 + int(fp[4:6], 16) % 32 if "thinking" in body else 0
    cached = prompt // 2 if any(m.get("role") == "system" for m in messages) else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "billed_units": 1 if body.get("enable_search") else 0,
        "prompt_tokens_details": {
            "text_tokens": prompt,
            "audio_tokens": 0,
            "cached_tokens": cached,
            "image_tokens": 0,
            "video_tokens": 0,
            "citation_tokens": 0,
        },
        "completion_tokens_details": {
            "text_tokens": completion,
            "audio_tokens": 0,
            "reasoning_tokens": reasoning,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_for(
    body: dict[str, Any], *, task_id: str, created: int, fingerprint: str | None = None
) -> dict[str, Any]:
    """The chat.completion a task returns; ``fingerprint`` skips recomputing it."""
    fp = fingerprint or request_fingerprint(body)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": expected_content(body, fingerprint=fp),
    }
    reasoning = expected_reasoning(body, fingerprint=fp)
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": task_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": expected_usage(body, fingerprint=fp),
        "system_fingerprint": "fp_sim",
    }


def with_nul(completion: dict[str, Any]) -> dict[str, Any]:
    """``completion`` with U+0000 appended to its content (strip it to get the expected text)."""
    message = completion["choices"][0]["message"]
    message["content"] = message["content"] + NUL
    return completion
