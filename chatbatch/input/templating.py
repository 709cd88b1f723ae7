"""Prompt templates: read and compiled once, rendered with one record's fields at a time.

A missing field is an error (never an empty string in a prompt someone pays for), and the error
says which field, so the loader can name the file, the line and the column; a header that lacks
a column the template uses is refused up front, with the closest column named. Templates render
in a sandbox (``chatbatch.input.sandbox``) that cannot change the record and limits each
record's messages in time (``RENDER_SECONDS``) and size (the caller's ``max_bytes``, the longest
line chatbatch accepts).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError, UndefinedError, meta, nodes

from chatbatch.errors import InputError
from chatbatch.input.render_limits import OutOfTime, OverLimit, RenderLimits
from chatbatch.input.sandbox import (
    ENVIRONMENT,
    GLOBALS_LEFT_OUT,
    MissingField,
    render_within_limits,
)

FILE_PREFIX = "@"
RECORD_NAME = "row"  # the whole record, for fields that are not identifiers: {{ row["a b"] }}
MAX_NAMES_SHOWN = 20
RENDER_SECONDS = 2.0  # wall-clock time one record's messages may take to render


class RenderError(ValueError):
    """A record the template cannot be rendered with; the message says why."""


class RenderTimeout(RenderError):
    """A record whose messages took longer than the time limit to render."""


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
    """One compiled template; ``label`` names it in messages ("template", "system template");
    ``names`` are the top-level fields it uses without testing for them, in order."""

    template: Template
    label: str
    names: tuple[str, ...] = ()

    def render(self, record: Mapping[str, Any], *, kind: str, limits: RenderLimits) -> str:
        """The text for ``record``; RenderError saying what went wrong (``kind``, "column" or
        "field", words the message)."""
        context = {RECORD_NAME: record, **record}
        try:
            return render_within_limits(self.template, context, limits)
        except OutOfTime as exc:
            raise RenderTimeout(f"{self.label} stopped: it {exc}") from None
        except OverLimit as exc:
            raise RenderError(f"{self.label} stopped: it {exc}") from None
        except MissingField as exc:
            if exc.owner is not None and exc.owner is not record:
                raise RenderError(f"{self.label} failed: {exc}") from None
            if exc.owner is None and exc.name in GLOBALS_LEFT_OUT:
                raise RenderError(
                    f"{self.label} uses {exc.name!r}, which chatbatch templates do not offer "
                    "(it could grow without limit)"
                ) from None
            raise RenderError(
                f"{self.label} uses {kind} {exc.name!r}, which {_which(kind)} does not have "
                f"({kind}s: {names_text(list(record))})"
            ) from None
        except UndefinedError as exc:
            raise RenderError(f"{self.label} failed: {exc}") from None
        except MemoryError:
            raise RenderError(f"{self.label} stopped: it ran out of memory") from None
        except Exception as exc:  # the user's template, sandboxed: any failure is this record's
            raise RenderError(f"{self.label} failed: {type(exc).__name__}: {exc}") from None

    def header_problem(self, columns: list[str], *, kind: str) -> str | None:
        """The problem with a header that lacks names this template uses (each with the
        closest column, if any), or None."""
        known = set(columns)
        unknown = [name for name in self.names if name not in known]
        if not unknown:
            return None
        named = [_unknown_name(name, columns) for name in unknown]
        plural = "s" if len(named) > 1 else ""
        listed = ", ".join(named[:-1]) + " and " + named[-1] if plural else named[0]
        return (
            f"{self.label} uses {kind}{plural} {listed}, which {_which(kind)} does not have "
            f"({kind}s: {names_text(columns)})"
        )


def _unknown_name(name: str, columns: list[str]) -> str:
    """A name the header lacks, for a message: with the closest column, if one is close."""
    if name in GLOBALS_LEFT_OUT:
        return f"{name!r} (not offered in chatbatch templates)"
    close = difflib.get_close_matches(name, columns, n=1)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def compile_template(source: TemplateText, *, label: str) -> RecordTemplate:
    """Compile ``source``; InputError naming its origin and line on a syntax error."""
    try:
        tree = ENVIRONMENT.parse(source.text)
        names = _required_names(tree)
        template = ENVIRONMENT.from_string(tree)
    except TemplateSyntaxError as exc:
        problem = f"{label} syntax error: {exc.message}"
        raise InputError(source.origin, [(exc.lineno, problem)], 1) from None
    # Jinja copies the globals into every render's context; a plain dict copies several times
    # faster than the ChainMap it keeps them in, which matters at a million rows.
    template.globals = dict(template.globals)
    return RecordTemplate(template, label, names)


def _required_names(tree: nodes.Template) -> tuple[str, ...]:
    """The top-level names a parsed template takes from every record, in order of use: not
    ``row``, the globals, or names it tests (``is defined``) or gives a ``default``."""
    undeclared = meta.find_undeclared_variables(tree) - set(ENVIRONMENT.globals) - {RECORD_NAME}
    optional = {
        node.node.name
        for node in (*tree.find_all(nodes.Test), *tree.find_all(nodes.Filter))
        if isinstance(node.node, nodes.Name)
        and node.name in ("defined", "undefined", "default", "d")
    }
    required = undeclared - optional
    used = (node.name for node in tree.find_all(nodes.Name))
    return tuple(dict.fromkeys(name for name in used if name in required))


@dataclass(frozen=True)
class PromptTemplate:
    """The user message template and an optional system message template of a record load."""

    user: RecordTemplate
    system: RecordTemplate | None = None

    def messages(
        self,
        record: Mapping[str, Any],
        *,
        kind: str,
        max_bytes: int,
        seconds: float | None = None,
    ) -> list[dict[str, str]]:
        """The chat messages for ``record``, each at most ``max_bytes`` long and all rendered
        within ``seconds`` (RENDER_SECONDS); RenderError when a template fails, goes past a
        limit (RenderTimeout: the time limit) or renders an empty user message."""
        limits = RenderLimits(max_bytes, RENDER_SECONDS if seconds is None else seconds)
        messages = []
        if self.system is not None:
            system = self.system.render(record, kind=kind, limits=limits)
            messages.append({"role": "system", "content": system})
        content = self.user.render(record, kind=kind, limits=limits)
        if not content.strip():
            raise RenderError(f"{self.user.label} rendered an empty message")
        messages.append({"role": "user", "content": content})
        return messages

    def unknown_columns(self, columns: list[str], *, kind: str) -> list[str]:
        """One problem per template that uses names missing from ``columns`` (a header)."""
        templates = (self.system, self.user) if self.system is not None else (self.user,)
        found = (template.header_problem(columns, kind=kind) for template in templates)
        return [problem for problem in found if problem is not None]


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
    """Where a message says the names are missing from: the file (a header) or this record."""
    return "the file" if kind == "column" else "this record"
