"""Prompt templates: Jinja2 in a sandbox, rendered with one record's fields at a time.

A missing field is an error (never an empty string in a prompt someone pays for), and the error
says which field, so the loader can name the file, the line and the column.

A template cannot change the record it renders (an immutable sandbox), and each record's
messages are limited in time (``RENDER_SECONDS``) and size (the caller's ``max_bytes``, the
longest line chatbatch accepts). Every operation that can build a large value (``*``, ``**``,
``%``, ``+``, ``~``, list and dict literals, calls, filters) refuses one larger than the limit:
before building it where the size can be told in advance (sizes, repeats, format widths), right
after otherwise; a render may build at most ``WORK_FACTOR`` times the limit in all, and its text
is measured piece by piece as it is generated. Time can only run away in loops and recursion:
every loop start, every CLOCK_EVERY items, every call and every CLOCK_EVERY_BYTES of output look
at the clock.
"""

from __future__ import annotations

import difflib
import functools
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEnvironment,
    SecurityError,
    _mutable_spec,
    modifies_known_mutable,
)
from jinja2.utils import missing, pass_eval_context
from jinja2.visitor import NodeTransformer

from chatbatch.errors import InputError

FILE_PREFIX = "@"
RECORD_NAME = "row"  # the whole record, for fields that are not identifiers: {{ row["a b"] }}
MAX_NAMES_SHOWN = 20

RENDER_SECONDS = 2.0  # wall-clock time one record's messages may take to render
WORK_FACTOR = 8  # a render may build values of at most this many times max_bytes in all
MAX_INT_BITS = 14_300  # ~4,300 digits, the most Python will print of a number
CLOCK_EVERY = 64  # loop items between two looks at the clock
CLOCK_EVERY_BYTES = 1 << 16  # output between two looks at the clock
GLOBALS_KEPT = ("range", "dict")
# Left out: state a loop could grow (namespace, cycler, joiner), text of any length (lipsum).
GLOBALS_LEFT_OUT = ("namespace", "cycler", "joiner", "lipsum")
# Internal filters the compiler wraps loops, ``~`` and literals in; a space keeps templates from
# naming them.
LOOP_FILTER = "chatbatch loop"
CONCAT_FILTER = "chatbatch concat"
VALUE_FILTER = "chatbatch value"
# Filters whose extra arguments are data, not sizes: a large number there allocates nothing.
DATA_FILTERS = frozenset(
    {"d", "default", "float", "format", "groupby", "int", "map", "reject", "rejectattr"}
    | {"round", "select", "selectattr", "sum"}
)
# Operations that repeat one argument up to once per character or item of their input:
# (position, keyword) of that argument, after the input.
REPEATING = {
    "replace": (1, "new"),
    "expandtabs": (0, "tabsize"),
    "translate": (0, "table"),
    "indent": (0, "width"),
    "wordwrap": (2, "wrapstring"),
    "tojson": (0, "indent"),
    "join": (0, "d"),
}
SETTING = "CHATBATCH_MAX_LINE_BYTES"
OUTSIDE_RENDER = "ran outside a render"

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


class MissingField(UndefinedError):
    """The template used a name that a mapping (``owner``; None: the top level) lacks."""

    def __init__(self, message: str, *, name: str, owner: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


class RenderError(ValueError):
    """A record the template cannot be rendered with; the message says why."""


class RenderTimeout(RenderError):
    """A record whose messages took longer than the time limit to render."""


class _OverLimit(Exception):
    """A render went past one of its limits; the message (a predicate) names the limit."""


class _OutOfTime(_OverLimit):
    """A render went past its time limit."""


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


class RenderLimits:
    """One record's render limits, and how much of its work budget is left."""

    __slots__ = ("budget", "deadline", "max_bytes", "seconds")

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.budget = WORK_FACTOR * max_bytes

    def check_clock(self) -> None:
        """_OverLimit once the render has run longer than its time limit."""
        if time.monotonic() > self.deadline:
            raise _OutOfTime(f"took longer than the limit of {self.seconds:g} s per record")

    def check_size(self, size: int) -> None:
        """_OverLimit when a value of ``size`` would be longer than a prompt may be."""
        if size > self.max_bytes:
            raise _OverLimit(
                f"would build a text longer than the limit of {self.max_bytes} bytes ({SETTING})"
            )

    def check_arguments(self, values: Iterable[Any], *, sizes: bool) -> None:
        """_OverLimit for an argument already too large to print (a list that holds a long text
        many times over) or, with ``sizes``, a number larger than the limit: as a width, a
        count or a length it would allocate that much."""
        most = self.max_bytes
        for value in values:
            kind = type(value)
            if kind is int:
                if sizes and value > most:
                    raise _OverLimit(
                        f"passes {value} as an argument, more than the limit of {most} bytes "
                        f"({SETTING})"
                    )
            elif kind is not str and kind not in _FLAT:
                self.check_size(_weight(value, most))

    def check_repeat(self, value: Any, repeated: Any) -> None:
        """_OverLimit when repeating ``repeated`` once per character or item of ``value`` could
        build more than the render's whole work budget."""
        unit = repeated if type(repeated) is int else _weight(repeated, self.budget)
        if unit > 0 and (1 + _weight(value, self.budget)) * (1 + unit) > self.budget:
            self.check_size(self.budget + 1)

    def built(self, value: Any) -> Any:
        """``value``, once it is known to be no longer than the limit, its length paid from
        the budget (numbers and ranges cost nothing)."""
        kind = type(value)
        if kind is str:
            weight = len(value)
        elif kind in _FLAT or isinstance(value, _OPAQUE):
            return value
        else:
            weight = _weight(value, self.max_bytes)
        self.budget -= weight
        if weight > self.max_bytes or self.budget < 0:
            self.check_size(weight)
            raise _OverLimit(
                f"built more than {WORK_FACTOR} times the limit of {self.max_bytes} bytes "
                f"({SETTING}) in values"
            )
        return value


_LIMITS: ContextVar[RenderLimits | None] = ContextVar("chatbatch_render_limits", default=None)
_FLAT = frozenset({str, int, float, bool, type(None)})  # printed short, or measured by len
_TEXT_ONLY = {str}
_OPAQUE = (Undefined, range)  # collections in name only: printed short
_SIZED = (str, bytes, list, tuple, int)  # owners of methods whose numbers are sizes
_SMALL_LOOPS = frozenset({list, tuple, dict, str, range})  # their length is known up front
_MUTATORS = frozenset().union(*(names for _, names in _mutable_spec))


def _current() -> RenderLimits:
    """The running render's limits; outside a render (jinja folding constants while compiling)
    _OverLimit, so that nothing is computed without limits."""
    limits = _LIMITS.get()
    if limits is None:
        raise _OverLimit(OUTSIDE_RENDER)
    return limits


def _weight(value: Any, cap: int) -> int:
    """About how many characters ``value`` takes printed (a text its length, a collection one
    per item plus everything in it); counting may stop once past ``cap``."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind in _FLAT:
        return 1
    if kind is list or kind is tuple or kind is dict:
        if len(value) > cap:
            return len(value)
        if kind is dict:
            keys, values = _flat_weight(value.keys()), _flat_weight(value.values())
            if keys is not None and values is not None:
                return len(value) + 1 + keys + values
        else:
            flat = _flat_weight(value)
            if flat is not None:
                return len(value) + 1 + flat
    return _nested_weight(value, cap)


def _flat_weight(items: Collection[Any]) -> int | None:
    """The weight of the items of a collection of texts, or of numbers (counted in C, the
    common case); None for anything else."""
    kinds = set(map(type, items))
    if kinds == _TEXT_ONLY:
        return sum(map(len, items))
    if str not in kinds and kinds <= _FLAT:
        return len(items)
    return None


def _nested_weight(value: Any, cap: int) -> int:
    """``_weight`` of collections within collections, item by item."""
    total = 0
    pending = [value]
    while pending and total <= cap:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif type(item) in _FLAT or isinstance(item, _OPAQUE):
            total += 1
        elif isinstance(item, Mapping):
            total += len(item) + 1
            if total <= cap:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, Collection):
            total += len(item) + 1
            if total <= cap:
                pending.extend(item)
        else:
            total += 1
    return total


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], at: tuple[int, str]) -> Any:
    """The argument given at position or keyword ``at``, or None."""
    position, keyword = at
    return kwargs.get(keyword, args[position] if len(args) > position else None)


def _number_bits(operator: str, left: int, right: int) -> int:
    """How many bits ``left * right`` or ``left ** right`` takes, about."""
    if operator == "*":
        return left.bit_length() + right.bit_length()
    if operator == "**" and right > 0 and abs(left) > 1:
        return left.bit_length() * right
    return 0


def _product_weight(left: Any, right: Any, cap: int) -> int:
    """How large ``left * right`` is when one side is a sequence and the other a count."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(count, int) and isinstance(sequence, str | bytes | list | tuple):
            return _weight(sequence, cap) * max(count, 0)
    return 0


def _width(digits: str | None, stars: int, cap: int) -> int:
    """A width or precision in a format: its digits, or for ``*`` the largest number among
    the arguments."""
    if not digits:
        return 0
    if digits == "*":
        return stars
    return int(digits) if len(digits) <= len(str(cap)) else cap + 1


def _percent_weight(text: str, args: Any, cap: int) -> int:
    """An upper bound on the length of ``text % args``: the text, and for each conversion its
    width and precision and the largest argument."""
    if isinstance(args, Mapping):
        values = list(args.values())
    elif isinstance(args, tuple):
        values = list(args)
    else:
        values = [args]
    largest = max((_weight(value, cap) for value in values), default=0)
    stars = max((value for value in values if type(value) is int), default=0)
    total = len(text)
    for spec in _PRINTF_SPEC.finditer(text):
        width, precision = spec.groups()
        total += _width(width, stars, cap) + _width(precision, stars, cap) + largest
        if total > cap:
            break
    return total


def _format_weight(text: str, values: list[Any], cap: int) -> int:
    """An upper bound on the length of ``text.format(...)`` with ``values``: the text, and for
    each field its largest width or precision and the largest value."""
    largest = max((_weight(value, cap) for value in values), default=0)
    numbers = max((value for value in values if type(value) is int), default=0)
    total = len(text)
    try:
        specs = [spec or "" for _, name, spec, _ in Formatter().parse(text) if name is not None]
    except ValueError:
        return total  # a malformed format: str.format says what is wrong with it
    for spec in specs:
        widths = [_width(digits, 0, cap) for digits in _DIGITS.findall(spec)]
        if "{" in spec:
            widths.append(numbers)
        total += max(widths, default=0) + largest
        if total > cap:
            break
    return total


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Filter ``func`` under the render's limits: its input and arguments, and what it builds.
    A filter of a lone text (``text|upper``) runs as it is: without arguments no built-in filter
    makes more than a few times its input (``escape``, ``urlencode``)."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # the environment or context comes first
    sizes = name not in DATA_FILTERS
    special = _SPECIAL_FILTERS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        value = args[skip]
        if not kwargs and len(args) == skip + 1 and type(value) is str:
            return func(*args)
        limits = _current()
        if type(value) not in _FLAT:
            limits.check_size(_weight(value, limits.max_bytes))
        limits.check_arguments(args[skip + 1 :], sizes=sizes)
        if kwargs:
            limits.check_arguments(kwargs.values(), sizes=sizes)
        if special is not None:
            args = special(limits, skip, args, kwargs)
        return limits.built(func(*args, **kwargs))

    return guarded


def _joined_list(
    limits: RenderLimits, skip: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """``join``'s arguments, its input a list (it takes it all anyway) that can be measured:
    refused when the separator repeated between its items would make too much."""
    value = args[skip]
    if not isinstance(value, Collection):
        value = list(value)
        limits.check_size(_weight(value, limits.max_bytes))
    limits.check_repeat(value, _argument(args[skip + 1 :], kwargs, REPEATING["join"]))
    return (*args[:skip], value, *args[skip + 1 :])


def _formatted(
    limits: RenderLimits, skip: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """``format``'s arguments, refused when the widths of its ``%`` conversions are too large."""
    if isinstance(args[skip], str):
        text_args = kwargs or args[skip + 1 :]
        limits.check_size(_percent_weight(args[skip], text_args, limits.max_bytes))
    return args


def _repeating(at: tuple[int, str]) -> Callable[..., tuple[Any, ...]]:
    """A check for a filter that repeats its argument at ``at`` per character of its input."""

    def check(
        limits: RenderLimits, skip: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, ...]:
        limits.check_repeat(args[skip], _argument(args[skip + 1 :], kwargs, at))
        return args

    return check


_SPECIAL_FILTERS: dict[str, Callable[..., tuple[Any, ...]]] = {
    **{name: _repeating(at) for name, at in REPEATING.items()},
    "join": _joined_list,
    "format": _formatted,
}


def _checked_method_arguments(
    limits: RenderLimits, method: Any, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """The arguments of a method of a text, list or number (``'a'.center(n)``), once it cannot
    build too much: its numbers are sizes, and some repeat an argument. ``join`` gets a list,
    to be measured first."""
    limits.check_arguments(args, sizes=True)
    if kwargs:
        limits.check_arguments(kwargs.values(), sizes=True)
    name = getattr(method, "__name__", "")
    if name == "join" and len(args) == 1:
        items = args[0] if isinstance(args[0], Collection) else list(args[0])
        limits.check_repeat(items, owner)
        return (items,)
    if name in REPEATING:
        limits.check_repeat(owner, _argument(args, kwargs, REPEATING[name]))
    return args


def _loop_items(items: Any) -> Any:
    """A loop's items, after a look at the clock: as they are when there are few of them (the
    inner loop of a nested loop starts here every time, so each start looks), else looking at
    the clock every CLOCK_EVERY items."""
    limits = _current()
    limits.check_clock()
    if type(items) in _SMALL_LOOPS and len(items) <= CLOCK_EVERY:
        return items
    return _clocked(items, limits)


def _clocked(items: Any, limits: RenderLimits) -> Iterator[Any]:
    """``items``, looking at the clock every CLOCK_EVERY of them."""
    for count, item in enumerate(items, 1):
        if not count % CLOCK_EVERY:
            limits.check_clock()
        yield item


@pass_eval_context
def _concatenated(eval_ctx: EvalContext, parts: tuple[Any, ...]) -> str:
    """``a ~ b``, within the limits."""
    limits = _current()
    limits.check_arguments(parts, sizes=False)
    return limits.built(markup_join(parts) if eval_ctx.autoescape else str_join(parts))


def _literal(value: Any) -> Any:
    """A list, tuple or dict a template wrote out, once it is known not to be too large."""
    return _current().built(value)


def _joined(pieces: Iterable[str]) -> str:
    """Output gathered for ``{% set %}`` blocks, macros and calls, joined within the limits."""
    pieces = pieces if isinstance(pieces, list) else list(pieces)
    limits = _LIMITS.get()
    if limits is not None:
        limits.check_size(sum(map(len, pieces)))
    return "".join(pieces)


class _GuardNodes(NodeTransformer):
    """Rewrites a parsed template so that every loop's items, every ``~`` and every literal
    list or dict that is not constant go through the internal filters that apply the limits."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        """The loop, its items through LOOP_FILTER."""
        self.generic_visit(node)
        node.iter = _filter(cast(nodes.Expr, node.iter), LOOP_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        """``a ~ b`` as CONCAT_FILTER applied to (a, b)."""
        self.generic_visit(node)
        return _filter(nodes.Tuple(node.nodes, "load", lineno=node.lineno), CONCAT_FILTER)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        """``[a, b]`` through VALUE_FILTER: a list of lists of a long text grows fast."""
        self.generic_visit(node)
        return _literal_node(node, node.items)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        """``(a, b)`` through VALUE_FILTER, unless it is assigned to (``for a, b in``)."""
        self.generic_visit(node)
        return node if node.ctx != "load" else _literal_node(node, node.items)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        """``{k: v}`` through VALUE_FILTER."""
        self.generic_visit(node)
        return _literal_node(node, [part for pair in node.items for part in (pair.key, pair.value)])


def _literal_node(node: nodes.Expr, parts: list[nodes.Expr]) -> nodes.Expr:
    """A list, tuple or dict literal, through VALUE_FILTER unless it holds constants only (then
    the template's own size bounds it)."""
    if all(isinstance(part, nodes.Const) for part in parts):
        return node
    return _filter(node, VALUE_FILTER)


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    """``node | name`` as a node."""
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox records are rendered in: immutable, and every render within its limits."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(_joined)  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(
            undefined=_StrictFields,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.globals = {name: self.globals[name] for name in GLOBALS_KEPT}
        self.filters = {name: _guarded_filter(name, func) for name, func in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop_items
        self.filters[CONCAT_FILTER] = _concatenated
        self.filters[VALUE_FILTER] = _literal

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        """Compile ``source`` with loops, ``~`` and literals guarded (after jinja's constant
        folding, which the guarded filters refuse to take part in)."""
        return super()._generate(_GuardNodes().visit(source), name, filename, defer_init)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from a template (macros too, so recursion), within the limits."""
        limits = _current()
        limits.check_clock()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, _SIZED):
            args = _checked_method_arguments(limits, obj, owner, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(owner, str) and type(result) is not str:
            return result  # text.split(), .partition(), .encode(): a few times the text at most
        return limits.built(result)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """``+``, ``*``, ``**`` and ``%``, refused before they build too much (``+`` at most
        doubles, so right after)."""
        limits = _current()
        if type(left) is int and type(right) is int:
            if _number_bits(operator, left, right) > MAX_INT_BITS:
                raise _OverLimit(f"would build a number of more than {MAX_INT_BITS} bits")
            return self.binop_table[operator](left, right)
        if operator == "*":
            limits.check_size(_product_weight(left, right, limits.max_bytes))
        elif operator == "%" and isinstance(left, str):
            limits.check_size(_percent_weight(left, right, limits.max_bytes))
        return limits.built(self.binop_table[operator](left, right))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The immutable sandbox's rule, its slow look at the object's type only for the names
        of methods that change lists, dicts and sets."""
        if attr in _MUTATORS:
            return super().is_safe_attribute(obj, attr, value)
        return SandboxedEnvironment.is_safe_attribute(self, obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``text.format`` and ``text.format_map``, refused when the result would be too long."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text: str = value.__self__
        is_map = value.__name__ == "format_map"

        def formatted(*args: Any, **kwargs: Any) -> str:
            limits = _current()
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            values = [*mapping.values()] if is_map else [*args, *kwargs.values()]
            limits.check_size(_format_weight(text, values, limits.max_bytes))
            return wrapped(*args, **kwargs)

        return functools.update_wrapper(formatted, wrapped)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """The sandbox's refusal, saying so when the attribute would change a value."""
        if modifies_known_mutable(obj, attribute):
            return self.undefined(
                f"templates cannot change values: {attribute!r} would modify the "
                f"{type(obj).__name__}",
                name=attribute,
                obj=obj,
                exc=SecurityError,
            )
        return super().unsafe_undefined(obj, attribute)


_ENVIRONMENT = _Environment()


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
            return _rendered(self.template, context, limits)
        except _OutOfTime as exc:
            raise RenderTimeout(f"{self.label} stopped: it {exc}") from None
        except _OverLimit as exc:
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


def _rendered(template: Template, context: dict[str, Any], limits: RenderLimits) -> str:
    """The template's text, piece by piece: refused as soon as it is too long, with a look at
    the clock every CLOCK_EVERY_BYTES of it (loops and operations look on their own)."""
    token = _LIMITS.set(limits)
    try:
        pieces: list[str] = []
        add = pieces.append
        size = 0
        most = limits.max_bytes
        look_at = min(most, CLOCK_EVERY_BYTES)
        for piece in template.generate(context):
            add(piece)
            size += len(piece)
            if size > look_at:
                limits.check_size(size)
                limits.check_clock()
                look_at = min(most, size + CLOCK_EVERY_BYTES)
    finally:
        _LIMITS.reset(token)
    text = "".join(pieces)
    if size * 4 > most and not text.isascii():
        limits.check_size(len(text.encode("utf-8", "surrogatepass")))
    return text


def compile_template(source: TemplateText, *, label: str) -> RecordTemplate:
    """Compile ``source``; InputError naming its origin and line on a syntax error."""
    try:
        tree = _ENVIRONMENT.parse(source.text)
        names = _required_names(tree)
        template = _ENVIRONMENT.from_string(tree)
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
    undeclared = meta.find_undeclared_variables(tree) - set(_ENVIRONMENT.globals) - {RECORD_NAME}
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
    return "the file" if kind == "column" else "this record"
