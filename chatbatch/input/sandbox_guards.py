"""The checks the sandbox (``chatbatch.input.sandbox``) runs around a template's filters,
method calls, loops, ``~``, literals and gathered output, so none builds more than one render's
limits allow (``chatbatch.input.render_limits``) or runs on past its time.

Filters and methods are refused before they run where their arguments tell the size of the
result (widths, counts, repeats), and measured right after otherwise; loops look at the clock
when they start and every CLOCK_EVERY items.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from jinja2.nodes import EvalContext
from jinja2.runtime import markup_join, str_join
from jinja2.utils import pass_eval_context

from chatbatch.input.render_limits import (
    FLAT,
    LIMITS,
    RenderLimits,
    current_limits,
    percent_weight,
    weight_of,
)

CLOCK_EVERY = 64  # loop items between two looks at the clock
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

_SMALL_LOOPS = frozenset({list, tuple, dict, str, range})  # their length is known up front


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], at: tuple[int, str]) -> Any:
    """The argument given at position or keyword ``at``, or None."""
    position, keyword = at
    return kwargs.get(keyword, args[position] if len(args) > position else None)


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
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
        limits = current_limits()
        if type(value) not in FLAT:
            limits.check_size(weight_of(value, limits.max_bytes))
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
        limits.check_size(weight_of(value, limits.max_bytes))
    limits.check_repeat(value, _argument(args[skip + 1 :], kwargs, REPEATING["join"]))
    return (*args[:skip], value, *args[skip + 1 :])


def _formatted(
    limits: RenderLimits, skip: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """``format``'s arguments, refused when the widths of its ``%`` conversions are too large."""
    if isinstance(args[skip], str):
        text_args = kwargs or args[skip + 1 :]
        limits.check_size(percent_weight(args[skip], text_args, limits.max_bytes))
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


def checked_method_arguments(
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


def loop_items(items: Any) -> Any:
    """A loop's items, after a look at the clock: as they are when there are few of them (the
    inner loop of a nested loop starts here every time, so each start looks), else looking at
    the clock every CLOCK_EVERY items."""
    limits = current_limits()
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
def concatenated(eval_ctx: EvalContext, parts: tuple[Any, ...]) -> str:
    """``a ~ b``, within the limits."""
    limits = current_limits()
    limits.check_arguments(parts, sizes=False)
    return limits.built(markup_join(parts) if eval_ctx.autoescape else str_join(parts))


def literal(value: Any) -> Any:
    """A list, tuple or dict a template wrote out, once it is known not to be too large."""
    return current_limits().built(value)


def joined(pieces: Iterable[str]) -> str:
    """Output gathered for ``{% set %}`` blocks, macros and calls, joined within the limits."""
    pieces = pieces if isinstance(pieces, list) else list(pieces)
    limits = LIMITS.get()
    if limits is not None:
        limits.check_size(sum(map(len, pieces)))
    return "".join(pieces)
