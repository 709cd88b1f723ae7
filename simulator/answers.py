"""Answers derived deterministically from the request, so tests can prove each result landed on
its own request. Pure functions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

LABELS = ("positive", "negative", "neutral")
IGNORED_KEYS = ("background", "stream")


def request_fingerprint(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the request, without the transport-only keys."""
    canonical = {k: v for k, v in body.items() if k not in IGNORED_KEYS}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def message_text(content: Any) -> str:
    """The text of a message's content: a string, a list of parts, or null."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return bool(body.get("json_mode")) or kind in ("json_object", "json_schema")


def expected_content(body: dict[str, Any]) -> str:
    """The assistant content the simulator returns for ``body``."""
    fp = request_fingerprint(body)
    if wants_json(body):
        label = LABELS[int(fp[6:8], 16) % len(LABELS)]
        confidence = round(0.5 + int(fp[8:12], 16) / 0x10000 / 2, 2)
        return json.dumps({"fingerprint": fp[:16], "label": label, "confidence": confidence})
    messages = body.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = message_text(users[-1].get("content")) if users else ""
    return f"sim:{fp[:16]}: {last[:40]}"


def expected_usage(body: dict[str, Any]) -> dict[str, Any]:
    """The usage object (GeekAI shape) the simulator returns for ``body``."""
    fp = request_fingerprint(body)
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    chars = sum(len(message_text(m.get("content"))) for m in messages)
    prompt = 1 + chars // 4
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
            "text_tokens": completion - reasoning if completion > reasoning else completion,
            "audio_tokens": 0,
            "reasoning_tokens": reasoning,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_for(body: dict[str, Any], *, task_id: str, created: int) -> dict[str, Any]:
    """The chat.completion a task returns."""
    message: dict[str, Any] = {"role": "assistant", "content": expected_content(body)}
    if "thinking" in body:
        message["reasoning_content"] = "thinking about " + request_fingerprint(body)[:8]
    return {
        "id": task_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": expected_usage(body),
        "system_fingerprint": "fp_sim",
    }
