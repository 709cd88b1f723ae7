"""Answers derived deterministically from the request, so tests can prove each result landed on
its own request. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

LABELS = ("positive", "negative", "neutral")
TRANSPORT_KEYS = frozenset({"background", "stream"})
CAP_KEYS = ("max_tokens", "max_completion_tokens")
CHARS_PER_TOKEN = 4  # the simulator's convention, as prompt tokens are counted
JSON_FORMATS = ("json_object", "json_schema")
NUL = "\x00"
MAX_SCHEMA_DEPTH = 8  # deeper (or recursive) schemas get null there
WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "tango")
# The shape of the answer to a JSON request without a schema (see ``expected_content``).
LABEL_SCHEMA = {
    "type": "object",
    "properties": {
        "fingerprint": {"type": "string"},
        "label": {"enum": list(LABELS)},
        "confidence": {"type": "number"},
    },
}


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


def answer_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a ``response_format`` of type json_schema carries (None: no usable one)."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) and schema else None


def completion_cap(body: dict[str, Any]) -> int | None:
    """The smaller usable ``max_tokens``/``max_completion_tokens`` of ``body`` (None: none)."""
    caps = [body[key] for key in CAP_KEYS if _int(body.get(key), 0) >= 1]
    return min(caps) if caps else None


def _completion_tokens(body: dict[str, Any], fp: str) -> tuple[int, bool]:
    """The completion tokens an answer reports, and whether the request's cap cut it short."""
    natural = 5 + int(fp[:4], 16) % 50
    cap = completion_cap(body)
    if cap is not None and cap < natural:
        return cap, True
    return natural, False


def expected_finish_reason(body: dict[str, Any], *, fingerprint: str | None = None) -> str:
    """The answer's finish_reason: "length" when ``max_tokens`` cut it short, else "stop"."""
    fp = fingerprint or request_fingerprint(body)
    return "length" if _completion_tokens(body, fp)[1] else "stop"


def _cut(body: dict[str, Any], fp: str, content: str) -> str:
    """``content`` cut to about the capped completion tokens when the request's cap binds."""
    tokens, cut = _completion_tokens(body, fp)
    return content[: tokens * CHARS_PER_TOKEN] if cut else content


def expected_content(body: dict[str, Any], *, fingerprint: str | None = None) -> str:
    """The assistant content the simulator returns for ``body``: a value following its JSON
    Schema, a small labelled JSON object for other JSON requests, else an echo; cut to about
    ``max_tokens`` * 4 characters when that cap is below the answer's completion tokens."""
    fp = fingerprint or request_fingerprint(body)
    return _cut(body, fp, _full_content(body, fp))


def _full_content(body: dict[str, Any], fp: str) -> str:
    """The content before any ``max_tokens`` cut."""
    schema = answer_schema(body)
    if schema is not None:
        return json.dumps(value_for(schema, fp))
    if wants_json(body):
        label = LABELS[int(fp[6:8], 16) % len(LABELS)]
        confidence = round(0.5 + (int(fp[8:10], 16) % 50) / 100, 2)
        return json.dumps({"fingerprint": fp[:16], "label": label, "confidence": confidence})
    users = [m for m in _messages(body) if m.get("role") == "user"]
    last = message_text(users[-1].get("content")) if users else ""
    return f"sim:{fp[:16]}: {last[:40]}"


def spoiled_content(body: dict[str, Any], *, draw: int, fingerprint: str | None = None) -> str:
    """A broken version of the JSON answer to ``body``, as models sometimes give: cut in half
    (not JSON) when ``draw`` is even, else with one field of the wrong type (cut in half when
    no field has a declared type); then cut as ``max_tokens`` cuts the answer."""
    fp = fingerprint or request_fingerprint(body)
    return _cut(body, fp, _spoiled(body, draw, _full_content(body, fp)))


def _spoiled(body: dict[str, Any], draw: int, content: str) -> str:
    """The whole JSON ``content`` broken as ``draw`` says."""
    if draw % 2 == 1:
        value = json.loads(content)
        schema = answer_schema(body) or LABEL_SCHEMA
        properties = _resolve(schema, schema).get("properties")
        if isinstance(value, dict) and isinstance(properties, dict):
            for name, spec in properties.items():
                spec = _resolve(spec, schema)
                if name in value and isinstance(spec, dict) and {"type", "enum"} & set(spec):
                    value[name] = 7 if isinstance(value[name], str) else "n/a"
                    return json.dumps(value)
    return content[: len(content) // 2]


def value_for(schema: dict[str, Any], fingerprint: str) -> Any:
    """A value following ``schema``, derived from the request's fingerprint: an enum member
    picked by it, numbers within their bounds, every property of an object (none added), one
    item per array. Covers what structured outputs use, not all of JSON Schema."""
    return _value(schema, schema, fingerprint, "", 0)


def _value(schema: Any, root: dict[str, Any], fp: str, path: str, depth: int) -> Any:
    """The value at ``path`` (a JSON pointer into the answer, used to vary the picks)."""
    schema = _resolve(schema, root)
    if depth > MAX_SCHEMA_DEPTH or not isinstance(schema, dict):
        return None
    pick = _pick(fp, path)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][pick % len(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _value(schema[key][0], root, fp, path, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, fp, path, depth)
    if kind == "array":
        items = schema.get("items", {})
        count = max(1, _int(schema.get("minItems"), 1))
        count = min(count, _int(schema.get("maxItems"), count))
        return [_value(items, root, fp, f"{path}/{i}", depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, pick, integer=kind == "integer")
    if kind == "boolean":
        return pick % 2 == 0
    if kind == "null":
        return None
    return _string(schema, fp, path, pick)


def _object(
    schema: dict[str, Any], root: dict[str, Any], fp: str, path: str, depth: int
) -> dict[str, Any]:
    """Every listed property, plus any required one the schema does not describe."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = list(properties)
    names += [n for n in required if n not in properties] if isinstance(required, list) else []
    return {
        name: _value(
            properties.get(name, {"type": "string"}), root, fp, f"{path}/{name}", depth + 1
        )
        for name in names
    }


def _number(schema: dict[str, Any], pick: int, *, integer: bool) -> int | float:
    """A number within ``minimum``/``maximum`` (exclusive bounds too); 0..100 for integers and
    0..1 for numbers when unbounded."""
    low = _bound(schema, "minimum", "exclusiveMinimum", 1)
    high = _bound(schema, "maximum", "exclusiveMaximum", -1)
    if integer:
        low = math.ceil(low) if low is not None else (0 if high is None else math.floor(high) - 100)
        high = math.floor(high) if high is not None else low + 100
        return low + pick % (high - low + 1) if high >= low else low
    low = low if low is not None else (0.0 if high is None else high - 1.0)
    high = high if high is not None else low + 1.0
    value = round(low + (high - low) * (pick % 1000) / 1000, 2)
    return value if low <= value <= high else low


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: int) -> float | None:
    """The tighter of an inclusive and an exclusive bound (nudged inside by a hundredth)."""
    bounds = []
    if _is_number(schema.get(inclusive)):
        bounds.append(float(schema[inclusive]))
    if _is_number(schema.get(exclusive)):
        bounds.append(float(schema[exclusive]) + step * 0.01)
    if not bounds:
        return None
    return max(bounds) if step > 0 else min(bounds)


def _string(schema: dict[str, Any], fp: str, path: str, pick: int) -> str:
    """A short text (``minLength``/``maxLength`` respected); dates for the date formats."""
    if schema.get("format") == "date":
        return f"2026-{1 + pick % 12:02d}-{1 + pick % 28:02d}"
    if schema.get("format") == "date-time":
        return f"2026-{1 + pick % 12:02d}-{1 + pick % 28:02d}T12:00:00Z"
    text = f"{WORDS[pick % len(WORDS)]} {fp[:8]}"
    low = _int(schema.get("minLength"), 0)
    if len(text) < low:
        text += "x" * (low - len(text))
    return text[: _int(schema.get("maxLength"), len(text))]


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/$defs/...``); anything else is returned as is."""
    for _ in range(MAX_SCHEMA_DEPTH):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = root
        for part in ref[1:].split("/")[1:]:
            target = target.get(part) if isinstance(target, dict) else None
        schema = target
    return None


def _type_of(schema: dict[str, Any]) -> str | None:
    """The schema's type (the first non-null one of a list), inferred from its keywords."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if kind is None and "properties" in schema:
        return "object"
    if kind is None and "items" in schema:
        return "array"
    return kind if isinstance(kind, str) else None


def _pick(fp: str, path: str) -> int:
    """A number derived from the fingerprint and a place in the answer."""
    return int(hashlib.sha256(f"{fp}{path}".encode()).hexdigest()[:8], 16)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def expected_reasoning(body: dict[str, Any], *, fingerprint: str | None = None) -> str | None:
    """The ``reasoning_content`` for a request with ``thinking``, else None."""
    if "thinking" not in body:
        return None
    fp = fingerprint or request_fingerprint(body)
    return f"sim reasoning for {fp[:16]}"


def expected_usage(body: dict[str, Any], *, fingerprint: str | None = None) -> dict[str, Any]:
    """The usage object (GeekAI shape) the simulator returns for ``body``; a ``max_tokens`` (or
    ``max_completion_tokens``) below its completion tokens caps them, reasoning ones included."""
    fp = fingerprint or request_fingerprint(body)
    messages = _messages(body)
    prompt = 1 + sum(len(message_text(m.get("content"))) for m in messages) // CHARS_PER_TOKEN
    completion, cut = _completion_tokens(body, fp)
    reasoning = 8 + int(fp[4:6], 16) % 32 if "thinking" in body else 0
    reasoning = min(reasoning, completion) if cut else reasoning
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
    calls = expected_tool_calls(body, fingerprint=fp)
    if calls is not None:
        message["tool_calls"] = calls
    finish = expected_finish_reason(body, fingerprint=fp)
    choices = [{"index": 0, "message": message, "finish_reason": finish}]
    for index, content in enumerate(expected_further_contents(body, fingerprint=fp), 1):
        further = {"role": "assistant", "content": content}
        choices.append({"index": index, "message": further, "finish_reason": finish})
    completion = {
        "id": task_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": choices,
        "usage": expected_usage(body, fingerprint=fp),
        "system_fingerprint": "fp_sim",
    }
    citations = expected_citations(body, fingerprint=fp)
    if citations is not None:
        completion["citations"] = citations
    return completion


MAX_CHOICES = 8  # ``n`` beyond this is answered with this many choices


def expected_further_contents(body: dict[str, Any], *, fingerprint: str | None = None) -> list[str]:
    """The content of choices 2 … ``n`` (none for ``n`` of 1 or unset): the first choice's
    content, marked with the choice's number."""
    n = min(_int(body.get("n"), 1), MAX_CHOICES)
    if n < 2:
        return []
    first = expected_content(body, fingerprint=fingerprint)
    return [f"{first} (choice {k})" for k in range(2, n + 1)]


def expected_tool_calls(
    body: dict[str, Any], *, fingerprint: str | None = None
) -> list[dict[str, Any]] | None:
    """One call of the request's first function tool, with arguments derived from the request;
    None when it offers no tools."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else None
    fp = fingerprint or request_fingerprint(body)
    arguments = json.dumps({"query": f"sim {fp[:8]}"})
    call = {"name": str(name or "tool"), "arguments": arguments}
    return [{"id": f"call_{fp[:12]}", "type": "function", "function": call}]


def expected_citations(body: dict[str, Any], *, fingerprint: str | None = None) -> list[str] | None:
    """The links a web search (``enable_search``) cites, else None."""
    if not body.get("enable_search"):
        return None
    fp = fingerprint or request_fingerprint(body)
    return [f"https://search.sim.invalid/{fp[:8]}/{k}" for k in (1, 2)]


def with_nul(completion: dict[str, Any]) -> dict[str, Any]:
    """``completion`` with U+0000 appended to its content (strip it to get the expected text)."""
    message = completion["choices"][0]["message"]
    message["content"] = message["content"] + NUL
    return completion
