"""The Jinja2 sandbox records are rendered in: immutable, and every render within its limits.

A template cannot change the record it renders (an immutable sandbox), and a missing field is
an error that carries its name (``MissingField``), never an empty string. Every operation that
can build a large value (``*``, ``**``, ``%``, ``+``, ``~``, list and dict literals, calls,
filters) refuses one larger than the limit (``chatbatch.input.render_limits``): the operators,
calls and ``str.format`` here, filters, loops, ``~`` and literals through the guards of
``chatbatch.input.sandbox_guards``, which the compiler wires in. A render's text is measured
piece by piece as it is generated, with a look at the clock every CLOCK_EVERY_BYTES of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined, Template, UndefinedError, nodes
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEnvironment,
    SecurityError,
    _mutable_spec,
    modifies_known_mutable,
)
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from chatbatch.input.render_limits import (
    LIMITS,
    MAX_INT_BITS,
    OverLimit,
    RenderLimits,
    current_limits,
    format_weight,
    number_bits,
    percent_weight,
    product_weight,
)
from chatbatch.input.sandbox_guards import (
    checked_method_arguments,
    concatenated,
    guarded_filter,
    joined,
    literal,
    loop_items,
)

CLOCK_EVERY_BYTES = 1 << 16  # output between two looks at the clock
GLOBALS_KEPT = ("range", "dict")
# Left out: state a loop could grow (namespace, cycler, joiner), text of any length (lipsum).
GLOBALS_LEFT_OUT = ("namespace", "cycler", "joiner", "lipsum")
# Internal filters the compiler wraps loops, ``~`` and literals in; a space keeps templates from
# naming them.
LOOP_FILTER = "chatbatch loop"
CONCAT_FILTER = "chatbatch concat"
VALUE_FILTER = "chatbatch value"

_SIZED = (str, bytes, list, tuple, int)  # owners of methods whose numbers are sizes
_MUTATORS = frozenset().union(*(names for _, names in _mutable_spec))


class MissingField(UndefinedError):
    """The template used a name that a mapping (``owner``; None: the top level) lacks."""

    def __init__(self, message: str, *, name: str, owner: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


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
    concat = staticmethod(joined)  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(
            undefined=_StrictFields,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.globals = {name: self.globals[name] for name in GLOBALS_KEPT}
        self.filters = {name: guarded_filter(name, func) for name, func in self.filters.items()}
        self.filters[LOOP_FILTER] = loop_items
        self.filters[CONCAT_FILTER] = concatenated
        self.filters[VALUE_FILTER] = literal

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
        limits = current_limits()
        limits.check_clock()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, _SIZED):
            args = checked_method_arguments(limits, obj, owner, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(owner, str) and type(result) is not str:
            return result  # text.split(), .partition(), .encode(): a few times the text at most
        return limits.built(result)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """``+``, ``*``, ``**`` and ``%``, refused before they build too much (``+`` at most
        doubles, so right after)."""
        limits = current_limits()
        if type(left) is int and type(right) is int:
            if number_bits(operator, left, right) > MAX_INT_BITS:
                raise OverLimit(f"would build a number of more than {MAX_INT_BITS} bits")
            return self.binop_table[operator](left, right)
        if operator == "*":
            limits.check_size(product_weight(left, right, limits.max_bytes))
        elif operator == "%" and isinstance(left, str):
            limits.check_size(percent_weight(left, right, limits.max_bytes))
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
            limits = current_limits()
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            values = [*mapping.values()] if is_map else [*args, *kwargs.values()]
            limits.check_size(format_weight(text, values, limits.max_bytes))
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


ENVIRONMENT = _Environment()


def render_within_limits(template: Template, context: dict[str, Any], limits: RenderLimits) -> str:
    """The template's text, piece by piece: refused as soon as it is too long, with a look at
    the clock every CLOCK_EVERY_BYTES of it (loops and operations look on their own)."""
    token = LIMITS.set(limits)
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
        LIMITS.reset(token)
    text = "".join(pieces)
    if size * 4 > most and not text.isascii():
        limits.check_size(len(text.encode("utf-8", "surrogatepass")))
    return text
