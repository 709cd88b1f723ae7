"""How much one record's render may build and for how long, and how large an operation's result
would be before it is built.

Each record's messages are limited in time (the caller's seconds) and size (the caller's
``max_bytes``, the longest line chatbatch accepts). A render may build at most ``WORK_FACTOR``
times the size limit in all; the sandbox (``chatbatch.input.sandbox``) asks these limits before
and after every operation that can build a large value, and the estimates here tell it how
large a result would be where that can be known in advance (sizes, repeats, format widths).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Mapping
from contextvars import ContextVar
from string import Formatter
from typing import Any

from jinja2.runtime import Undefined

WORK_FACTOR = 8  # a render may build values of at most this many times max_bytes in all
MAX_INT_BITS = 14_300  # ~4,300 digits, the most Python will print of a number
SETTING = "CHATBATCH_MAX_LINE_BYTES"
OUTSIDE_RENDER = "ran outside a render"

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


class OverLimit(Exception):
    """A render went past one of its limits; the message (a predicate) names the limit."""


class OutOfTime(OverLimit):
    """A render went past its time limit."""


class RenderLimits:
    """One record's render limits, and how much of its work budget is left."""

    __slots__ = ("budget", "deadline", "max_bytes", "seconds")

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.budget = WORK_FACTOR * max_bytes

    def check_clock(self) -> None:
        """OverLimit once the render has run longer than its time limit."""
        if time.monotonic() > self.deadline:
            raise OutOfTime(f"took longer than the limit of {self.seconds:g} s per record")

    def check_size(self, size: int) -> None:
        """OverLimit when a value of ``size`` would be longer than a prompt may be."""
        if size > self.max_bytes:
            raise OverLimit(
                f"would build a text longer than the limit of {self.max_bytes} bytes ({SETTING})"
            )

    def check_arguments(self, values: Iterable[Any], *, sizes: bool) -> None:
        """OverLimit for an argument already too large to print (a list that holds a long text
        many times over) or, with ``sizes``, a number larger than the limit: as a width, a
        count or a length it would allocate that much."""
        most = self.max_bytes
        for value in values:
            kind = type(value)
            if kind is int:
                if sizes and value > most:
                    raise OverLimit(
                        f"passes {value} as an argument, more than the limit of {most} bytes "
                        f"({SETTING})"
                    )
            elif kind is not str and kind not in FLAT:
                self.check_size(weight_of(value, most))

    def check_repeat(self, value: Any, repeated: Any) -> None:
        """OverLimit when repeating ``repeated`` once per character or item of ``value`` could
        build more than the render's whole work budget."""
        unit = repeated if type(repeated) is int else weight_of(repeated, self.budget)
        if unit > 0 and (1 + weight_of(value, self.budget)) * (1 + unit) > self.budget:
            self.check_size(self.budget + 1)

    def built(self, value: Any) -> Any:
        """``value``, once it is known to be no longer than the limit, its length paid from
        the budget (numbers and ranges cost nothing)."""
        kind = type(value)
        if kind is str:
            weight = len(value)
        elif kind in FLAT or isinstance(value, OPAQUE):
            return value
        else:
            weight = weight_of(value, self.max_bytes)
        self.budget -= weight
        if weight > self.max_bytes or self.budget < 0:
            self.check_size(weight)
            raise OverLimit(
                f"built more than {WORK_FACTOR} times the limit of {self.max_bytes} bytes "
                f"({SETTING}) in values"
            )
        return value


LIMITS: ContextVar[RenderLimits | None] = ContextVar("chatbatch_render_limits", default=None)
FLAT = frozenset({str, int, float, bool, type(None)})  # printed short, or measured by len
_TEXT_ONLY = {str}
OPAQUE = (Undefined, range)  # collections in name only: printed short


def current_limits() -> RenderLimits:
    """The running render's limits; outside a render (jinja folding constants while compiling)
    OverLimit, so that nothing is computed without limits."""
    limits = LIMITS.get()
    if limits is None:
        raise OverLimit(OUTSIDE_RENDER)
    return limits


def weight_of(value: Any, cap: int) -> int:
    """About how many characters ``value`` takes printed (a text its length, a collection one
    per item plus everything in it); counting may stop once past ``cap``."""
    kind = type(value)
    if kind is str:
        return len(value)
    if kind in FLAT:
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
    if str not in kinds and kinds <= FLAT:
        return len(items)
    return None


def _nested_weight(value: Any, cap: int) -> int:
    """``weight`` of collections within collections, item by item."""
    total = 0
    pending = [value]
    while pending and total <= cap:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif type(item) in FLAT or isinstance(item, OPAQUE):
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


def number_bits(operator: str, left: int, right: int) -> int:
    """How many bits ``left * right`` or ``left ** right`` takes, about."""
    if operator == "*":
        return left.bit_length() + right.bit_length()
    if operator == "**" and right > 0 and abs(left) > 1:
        return left.bit_length() * right
    return 0


def product_weight(left: Any, right: Any, cap: int) -> int:
    """How large ``left * right`` is when one side is a sequence and the other a count."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(count, int) and isinstance(sequence, str | bytes | list | tuple):
            return weight_of(sequence, cap) * max(count, 0)
    return 0


def _width(digits: str | None, stars: int, cap: int) -> int:
    """A width or precision in a format: its digits, or for ``*`` the largest number among
    the arguments."""
    if not digits:
        return 0
    if digits == "*":
        return stars
    return int(digits) if len(digits) <= len(str(cap)) else cap + 1


def percent_weight(text: str, args: Any, cap: int) -> int:
    """An upper bound on the length of ``text % args``: the text, and for each conversion its
    width and precision and the largest argument."""
    if isinstance(args, Mapping):
        values = list(args.values())
    elif isinstance(args, tuple):
        values = list(args)
    else:
        values = [args]
    largest = max((weight_of(value, cap) for value in values), default=0)
    stars = max((value for value in values if type(value) is int), default=0)
    total = len(text)
    for spec in _PRINTF_SPEC.finditer(text):
        width, precision = spec.groups()
        total += _width(width, stars, cap) + _width(precision, stars, cap) + largest
        if total > cap:
            break
    return total


def format_weight(text: str, values: list[Any], cap: int) -> int:
    """An upper bound on the length of ``text.format(...)`` with ``values``: the text, and for
    each field its largest width or precision and the largest value."""
    largest = max((weight_of(value, cap) for value in values), default=0)
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
