"""Structured outputs: a user's JSON Schema turned into the provider's response format, and
every answer checked against it. Pure functions, no I/O beyond reading the schema file."""

from __future__ import annotations

import re
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from chatbatch.errors import InputError
from chatbatch.untrusted import one_line

if TYPE_CHECKING:
    from referencing import Registry, Resource
    from referencing._core import Resolver  # what Registry.resolver gives; not re-exported

# jsonschema is imported where it is used: it costs every command ~50 ms of start-up, and only
# loads with --schema and workers judging answers need it.

SCHEMA_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ERROR_CHARS = 500
# How the schema reaches the model: OpenAI's response_format json_schema (strict), or
# GeekAI's json_mode for models that only promise "some JSON object".
SCHEMA_MODES = ("json_schema", "json_mode")
# The keywords that point elsewhere in a schema; all must resolve inside it.
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Answers a schema is tried on when loaded: one that cannot judge them (a $ref loop) is refused.
TRIAL_ANSWERS: tuple[Any, ...] = (None, True, 0, 0.5, "", [], {})


def load_schema(path: Path) -> dict[str, Any]:
    """The JSON Schema in ``path``; InputError naming the file when it is not one, or when it
    could not judge answers on its own."""
    try:
        schema = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(str(path), [(None, "no such file")], 1) from None
    except orjson.JSONDecodeError as exc:
        raise InputError(str(path), [(exc.lineno, f"invalid JSON: {exc.msg}")], 1) from None
    if not isinstance(schema, dict):
        raise InputError(str(path), [(None, "a JSON Schema must be a JSON object")], 1)
    problems: list[tuple[int | None, str]] = [(None, p) for p in schema_problems(schema)]
    if problems:
        raise InputError(str(path), problems, len(problems))
    return schema


def schema_problems(schema: dict[str, Any]) -> list[str]:
    """Why ``schema`` cannot be a batch's schema: not valid against its meta-schema, or one
    that cannot judge answers on its own (empty when it is fine)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema.get("$schema", ""), str):
        return ["$schema must be a string, the URI of a JSON Schema version"]
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        return [f"not a valid JSON Schema at {where}: {exc.message}"]
    except RecursionError:
        return ["the schema is nested too deeply to check"]
    return reference_problems(schema)


def reference_problems(schema: dict[str, Any]) -> list[str]:
    """Why ``schema`` cannot judge answers on its own: each ``$ref`` that does not resolve
    inside it (nothing is ever fetched, so a remote one would only fail at the first, paid,
    answer), else a trial judgement that fails (a ``$ref`` that leads back to itself)."""
    from referencing import Resource
    from referencing.jsonschema import DRAFT202012

    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    todo = deque([(local_registry().resolver_with_root(root), root)])
    problems: list[str] = []
    while todo:  # breadth first, without recursion: a deep schema must not overflow the stack
        resolver, resource = todo.popleft()
        problems += _unresolved_refs(resolver, resource.contents)
        todo.extend((resolver.in_subresource(sub), sub) for sub in resource.subresources())
    if problems:
        return problems
    trial = _trial_problem(schema)
    return [trial] if trial else []


def _unresolved_refs(resolver: Resolver[Any], contents: Any) -> list[str]:
    """The problems of the references written in one (sub)schema that resolve to nothing."""
    if not isinstance(contents, dict):
        return []
    problems = []
    for keyword in REF_KEYWORDS:
        ref = contents.get(keyword)
        if isinstance(ref, str) and not _resolves(resolver, ref):
            problems.append(
                f"{keyword} {ref!r} does not resolve inside the schema (nothing is fetched: put "
                "the definition in this schema, e.g. under $defs)"
            )
    return problems


def _resolves(resolver: Resolver[Any], ref: str) -> bool:
    """Whether ``ref`` finds a (sub)schema without fetching anything."""
    from referencing.exceptions import Unresolvable

    try:
        resolver.lookup(ref)
    except (Unresolvable, ValueError):  # ValueError: not even a URI, e.g. "http://["
        return False
    return True


def _trial_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` fails to judge a few simple answers (None when it judges them all)."""
    validator = _validator(schema_text(schema))
    for answer in TRIAL_ANSWERS:
        try:
            validator.is_valid(answer)
        except Exception as exc:
            return f"the schema cannot judge answers: {_failure(exc)}"
    return None


@lru_cache(maxsize=1)
def local_registry() -> Registry[Any]:
    """The schema registry answers are judged with: it fetches nothing, so every ``$ref``
    resolves inside the schema itself (or to a bundled meta-schema) or is an error."""
    from referencing import Registry

    # referencing's attrs classes are opaque to mypy (jsonschema ignores the same error)
    return Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]


def _retrieve_nothing(uri: str) -> Resource[Any]:
    """Refuse to fetch ``uri``: a schema read from a file must never cause a network request."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


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
    """The validator of a schema (as stored), resolving references without fetching anything."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    schema = orjson.loads(schema_json)
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema, registry=local_registry())


def answer_problem(content: str | None, schema_json: str) -> str | None:
    """Why an answer's ``content`` does not follow the schema (None when it does). Models often
    wrap JSON in a Markdown fence; that is accepted, anything else around it is not."""
    if content is None:
        return "the answer has no content"
    try:
        value = orjson.loads(strip_fence(content))
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at character {exc.pos}"
    try:
        errors = sorted(_validator(schema_json).iter_errors(value), key=lambda e: list(e.path))
    except Exception as exc:  # e.g. a batch stored with a remote $ref
        return one_line(f"the schema cannot judge answers: {_failure(exc)}", MAX_ERROR_CHARS)
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # The path holds the answer's own keys: as stored text it must hold no NUL or escapes.
    return one_line(f"{where}: {first.message}{more}", MAX_ERROR_CHARS)


def _failure(exc: BaseException) -> str:
    """An error the validator raised, said in one short line."""
    from referencing.exceptions import Unresolvable

    if isinstance(exc, RecursionError):
        return "it recurses without end (a $ref that leads back to itself, or nesting too deep)"
    if isinstance(exc, Unresolvable):
        return f"$ref {getattr(exc, 'ref', str(exc))!r} does not resolve inside the schema"
    return f"{type(exc).__name__}: {exc}"


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


def first_label_property(schema: dict[str, Any]) -> str | None:
    """The schema's first top-level property whose value is text or one of a list (``enum``):
    where a labelling answer's label is; None when it has none."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return None
    for name, spec in properties.items():
        if isinstance(spec, dict) and (spec.get("type") == "string" or "enum" in spec):
            return str(name)
    return None
