"""Prompt templates: Jinja2 in a sandbox, rendered with one record's fields at a time.

A missing field is an error (never an empty string in a prompt someone pays for), and the error
says which field, so the loader can name the file, the line and the column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from chatbatch.errors import InputError

FILE_PREFIX = "@"
RECORD_NAME = "row"  # the whole record, for fields that are not identifiers: {{ row["a b"] }}
MAX_NAMES_SHOWN = 20


class MissingField(UndefinedError):
    """The template used a name that a mapping (``owner``; None: the top level) lacks."""

    def __init__(self, message: str, *, name: str, owner: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


class RenderError(ValueError):
    """A record the template cannot be rendered with; the message says why."""


class _StrictFields(StrictUndefined):
    """StrictUndefined that raises MissingField (carrying the name) for a missing top-level name
    or mapping key, and jinja's own UndefinedError for anything else."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[UndefinedError] = UndefinedError,
    ) -> None:
        if hint is None and isinstance(name, str) and (obj is missing or isinstance(obj, Mapping)):
            owner = None if obj is missing else obj
            exc = cast(
                type[UndefinedError], functools.partial(MissingField, name=name, owner=owner)
            )
        super().__init__(hint, obj, name, exc)


_ENVIRONMENT = SandboxedEnvironment(
    undefined=_StrictFields,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


@dataclass(frozen=True)
class TemplateText:
    """A template's source and where it came from (``--template`` or a file), for messages."""

    text: str
    origin: str


def read_template_text(value: str, *, option: str) -> TemplateText:
    """``value`` itself, or the contents of the file it names as ``@file``."""
    if not value.startswith(FILE_PREFIX):
        return TemplateText(value, option)
    path = Path(value[len(FILE_PREFIX) :])
    try:
        return TemplateText(path.read_text(encoding="utf-8-sig"), str(path))
    except FileNotFoundError:
        raise InputError(str(path), [(None, f"no such file (given as {option})")], 1) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), [(None, f"cannot read {option}: {exc}")], 1) from None


@dataclass(frozen=True)
class RecordTemplate:
    """One compiled template; ``label`` names it in messages ("template", "system template")."""

    template: Template
    label: str

    def render(self, record: Mapping[str, Any], *, kind: str) -> str:
        """The text for ``record``; RenderError saying what went wrong (``kind``, "column" or
        "field", words the message)."""
        context = {RECORD_NAME: record, **record}
        try:
            return self.template.render(context)
        except MissingField as exc:
            if exc.owner is not None and exc.owner is not record:
                raise RenderError(f"{self.label} failed: {exc}") from None
            raise RenderError(
                f"{self.label} uses {kind} {exc.name!r}, which {_which(kind)} does not have "
                f"({kind}s: {names_text(list(record))})"
            ) from None
        except UndefinedError as exc:
            raise RenderError(f"{self.label} failed: {exc}") from None
        except Exception as exc:  # the user's template, sandboxed: any failure is this record's
            raise RenderError(f"{self.label} failed: {type(exc).__name__}: {exc}") from None


def compile_template(source: TemplateText, *, label: str) -> RecordTemplate:
    """Compile ``source``; InputError naming its origin and line on a syntax error."""
    try:
        template = _ENVIRONMENT.from_string(source.text)
    except TemplateSyntaxError as exc:
        problem = f"{label} syntax error: {exc.message}"
        raise InputError(source.origin, [(exc.lineno, problem)], 1) from None
    # Jinja copies the globals into every render's context; a plain dict copies several times
    # faster than the ChainMap it keeps them in, which matters at a million rows.
    template.globals = dict(template.globals)
    return RecordTemplate(template, label)


@dataclass(frozen=True)
class PromptTemplate:
    """The user message template and an optional system message template of a record load."""

    user: RecordTemplate
    system: RecordTemplate | None = None

    def messages(self, record: Mapping[str, Any], *, kind: str) -> list[dict[str, str]]:
        """The chat messages for ``record``; RenderError when a template fails or renders an
        empty user message."""
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system.render(record, kind=kind)})
        content = self.user.render(record, kind=kind)
        if not content.strip():
            raise RenderError(f"{self.user.label} rendered an empty message")
        messages.append({"role": "user", "content": content})
        return messages


def prompt_template(template: str, *, system: str | None) -> PromptTemplate:
    """Read (``@file``) and compile ``--template`` and ``--system``."""
    user = compile_template(read_template_text(template, option="--template"), label="template")
    if system is None:
        return PromptTemplate(user)
    system_source = read_template_text(system, option="--system")
    return PromptTemplate(user, compile_template(system_source, label="system template"))


def names_text(names: list[str]) -> str:
    """Record names for a message, shortened when there are many."""
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_NAMES_SHOWN else "")


def _which(kind: str) -> str:
    return "the file" if kind == "column" else "this record"
