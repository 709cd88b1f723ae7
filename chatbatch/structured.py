"""Structured outputs: a user's JSON Schema turned into the provider's response format, and
every answer checked against it. Pure functions, no I/O beyond reading the schema file."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from chatbatch.errors import InputError

# jsonschema is imported where it is used: it costs every command ~50 ms of start-up, and only
# loads with --schema and workers judging answers need it.

SCHEMA_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ERROR_CHARS = 500
# How the schema reaches the model: OpenAI's response_format json_schema (strict), or
# GeekAI's json_mode for models that only promise "some JSON object".
SCHEMA_MODES = ("json_schema", "json_mode")


def load_schema(path: Path) -> dict[str, Any]:
    """The JSON Schema in ``path``; InputError naming the file when it is not one."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        schema = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(str(path), [(None, "no such file")], 1) from None
    except orjson.JSONDecodeError as exc:
        raise InputError(str(path), [(exc.lineno, f"invalid JSON: {exc.msg}")], 1) from None
    if not isinstance(schema, dict):
        raise InputError(str(path), [(None, "a JSON Schema must be a JSON object")], 1)
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        problem = f"not a valid JSON Schema at {where}: {exc.message}"
        raise InputError(str(path), [(None, problem)], 1) from None
    return schema


def response_format(schema: dict[str, Any], *, name: str) -> dict[str, Any]:
    """The ``response_format`` that asks the provider for answers following ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": SCHEMA_NAME_CHARS.sub("_", name)[:64] or "answer",
            "schema": schema,
            "strict": True,
        },
    }


def apply_schema(body: dict[str, Any], schema: dict[str, Any], *, mode: str, name: str) -> None:
    """Ask for structured answers in ``body`` (unless the request already sets its own format)."""
    if "response_format" in body or body.get("json_mode"):
        return
    if mode == "json_mode":
        body["json_mode"] = True
    else:
        body["response_format"] = response_format(schema, name=name)


def schema_text(schema: dict[str, Any]) -> str:
    """The schema as stored with the batch (compact JSON)."""
    return orjson.dumps(schema).decode()


@lru_cache(maxsize=32)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    schema = orjson.loads(schema_json)
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


def answer_problem(content: str | None, schema_json: str) -> str | None:
    """Why an answer's ``content`` does not follow the schema (None when it does). Models often
    wrap JSON in a Markdown fence; that is accepted, anything else around it is not."""
    if content is None:
        return "the answer has no content"
    try:
        value = orjson.loads(strip_fence(content))
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at character {exc.pos}"
    errors = sorted(_validator(schema_json).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.message}{more}"[:MAX_ERROR_CHARS]


def strip_fence(content: str) -> str:
    """``content`` without a surrounding ```json … ``` fence, if it has one."""
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and text.count("```") == 2:
        text = text[3:-3]
        first_newline = text.find("\n")
        if first_newline >= 0 and text[:first_newline].strip().isalpha():
            text = text[first_newline + 1 :]
    return text.strip()


def answer_fields(content: str | None) -> dict[str, Any] | None:
    """The top-level fields of a JSON-object answer (for CSV columns), else None."""
    if content is None:
        return None
    try:
        value = orjson.loads(strip_fence(content))
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
