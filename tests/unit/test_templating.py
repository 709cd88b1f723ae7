"""Prompt templates: rendered in a sandbox, and every failure named so a user can fix it."""

from __future__ import annotations

import copy
import csv
import time
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from chatbatch.errors import InputError
from chatbatch.input.templating import (
    PromptTemplate,
    RenderError,
    names_text,
    prompt_template,
    read_template_text,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORD = {"id": "7", "product": "kettle", "text": "Boils fast."}
LIMIT = 1 << 20


def test_renders_columns_into_the_user_message() -> None:
    template = prompt_template("Review of a {{ product }}: {{ text }}", system=None)
    assert template.messages(RECORD, kind="column", max_bytes=LIMIT) == [
        {"role": "user", "content": "Review of a kettle: Boils fast."}
    ]


def test_system_message_comes_first_and_is_a_template_too() -> None:
    template = prompt_template("{{ text }}", system="You rate {{ product | upper }}s.")
    assert template.messages(RECORD, kind="column", max_bytes=LIMIT) == [
        {"role": "system", "content": "You rate KETTLEs."},
        {"role": "user", "content": "Boils fast."},
    ]


def test_any_column_name_through_row() -> None:
    template = prompt_template("{{ row['review text'] }} / {{ row.id }}", system=None)
    record = {"id": "1", "review text": "fine"}
    assert template.messages(record, kind="column", max_bytes=LIMIT)[0]["content"] == "fine / 1"


def test_a_column_named_row_wins_over_the_record() -> None:
    template = prompt_template("{{ row }}", system=None)
    assert template.messages({"row": "5"}, kind="column", max_bytes=LIMIT)[0]["content"] == "5"


def test_missing_column_is_named_with_the_columns_there_are() -> None:
    template = prompt_template("{{ txt }}", system=None)
    with pytest.raises(RenderError) as info:
        template.messages(RECORD, kind="column", max_bytes=LIMIT)
    assert str(info.value) == (
        "template uses column 'txt', which the file does not have (columns: id, product, text)"
    )


def test_missing_key_of_the_record_through_row_is_a_missing_field() -> None:
    template = prompt_template("{{ row['note'] }}", system=None)
    with pytest.raises(RenderError, match="template uses field 'note', which this record does not"):
        template.messages({"a": 1}, kind="field", max_bytes=LIMIT)


def test_missing_column_in_the_system_template_says_so() -> None:
    template = prompt_template("{{ text }}", system="{{ persona }}")
    with pytest.raises(RenderError, match=r"^system template uses column 'persona'"):
        template.messages(RECORD, kind="column", max_bytes=LIMIT)


def test_optional_fields_can_be_tested_for() -> None:
    template = prompt_template(
        "{{ text }}{% if note is defined %} ({{ note }}){% endif %}", system=None
    )
    assert template.messages({"text": "a"}, kind="field", max_bytes=LIMIT)[0]["content"] == "a"
    assert (
        template.messages({"text": "a", "note": "n"}, kind="field", max_bytes=LIMIT)[0]["content"]
        == "a (n)"
    )


def test_nested_fields_and_their_absence() -> None:
    template = prompt_template("{{ meta.author }}", system=None)
    assert (
        template.messages({"meta": {"author": "x"}}, kind="field", max_bytes=LIMIT)[0]["content"]
        == "x"
    )
    with pytest.raises(RenderError, match="has no attribute 'author'"):
        template.messages({"meta": {}}, kind="field", max_bytes=LIMIT)


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    template = prompt_template("{{ text.__class__.__mro__ }}", system=None)
    with pytest.raises(RenderError, match="SecurityError"):
        template.messages(RECORD, kind="column", max_bytes=LIMIT)


def test_runtime_errors_are_the_records_problem() -> None:
    template = prompt_template("{{ text + 1 }}", system=None)
    with pytest.raises(RenderError, match="template failed: TypeError"):
        template.messages(RECORD, kind="column", max_bytes=LIMIT)


def test_an_empty_user_message_is_refused() -> None:
    template = prompt_template("{{ text | trim }}", system=None)
    with pytest.raises(RenderError, match="rendered an empty message"):
        template.messages({"text": "  "}, kind="column", max_bytes=LIMIT)


def test_syntax_error_names_the_inline_template_and_line() -> None:
    with pytest.raises(InputError) as info:
        prompt_template("line one\n{{ text }", system=None)
    assert info.value.path == "--template"
    assert info.value.problems == [(2, "template syntax error: unexpected '}'")]


def test_syntax_error_names_the_template_file(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("{% if text %}\n{{ text }}\n")
    with pytest.raises(InputError) as info:
        prompt_template(f"@{path}", system=None)
    assert info.value.path == str(path)
    assert "template syntax error" in str(info.value) and f"{path}:" in str(info.value)


def test_system_syntax_error_is_labelled() -> None:
    with pytest.raises(InputError, match="system template syntax error"):
        prompt_template("{{ text }}", system="{% for %}")


def test_templates_from_files_drop_the_bom_and_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_bytes(b"\xef\xbb\xbfLabel: {{ text }}\n")
    template = prompt_template(f"@{path}", system=None)
    assert (
        template.messages(RECORD, kind="column", max_bytes=LIMIT)[0]["content"]
        == "Label: Boils fast."
    )


def test_missing_template_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_template_text(f"@{tmp_path / 'nope.txt'}", option="--system")


def test_inline_text_is_kept_as_is() -> None:
    source = read_template_text("hi {{ x }}", option="--template")
    assert (source.text, source.origin) == ("hi {{ x }}", "--template")


def test_long_column_lists_are_shortened() -> None:
    names = [f"c{i}" for i in range(30)]
    assert names_text(names).endswith("c19, … (30 in all)")
    assert names_text(["a", "b"]) == "a, b"


def test_prompt_template_is_plain_data() -> None:
    template = prompt_template("{{ text }}", system=None)
    assert isinstance(template, PromptTemplate) and template.system is None


# --- a template cannot change its record, nor run without limits ------------------------------

SMALL = 1000  # bytes a rendered text may take in these tests
QUICK = 0.3  # seconds a record may take to render in these tests


def attempt(source: str, record: dict[str, Any] | None = None, seconds: float = QUICK) -> str:
    """The RenderError message rendering ``source`` with small limits gives."""
    template = prompt_template(source, system=None)
    with pytest.raises(RenderError) as info:
        template.messages(record or RECORD, kind="column", max_bytes=SMALL, seconds=seconds)
    return str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ row.update({'text': 'changed'}) }}",
        "{{ row.pop('text') }}",
        "{{ row.setdefault('extra', 1) }}",
        "{{ row.clear() }}",
        "{{ tags.append('x') }}",
        "{{ row.tags.extend(['x']) }}",
        "{{ row['meta'].update(a=1) }}",
        "{{ tags.sort() }}",
    ],
)
def test_a_template_cannot_change_the_record_it_renders(source: str) -> None:
    record: dict[str, Any] = {"text": "t", "tags": ["b", "a"], "meta": {}}
    before = copy.deepcopy(record)
    message = attempt(source, record)
    assert "template failed: SecurityError: templates cannot change values" in message
    assert record == before


def test_text_repeated_past_the_limit_is_refused_before_it_is_built() -> None:
    message = attempt("{{ 'a' * 10**10 }}")
    assert message == (
        "template stopped: it would build a text longer than the limit of 1000 bytes "
        "(CHATBATCH_MAX_LINE_BYTES)"
    )
    assert "longer than the limit" in attempt("{{ [text] * 10**10 }}")
    assert "longer than the limit" in attempt("{{ 10**10 * 'a' }}")


def test_huge_numbers_are_refused_before_they_are_computed() -> None:
    # ** is left-associative in Jinja: 10**10**10 is (10**10)**10, 101 digits, and renders.
    template = prompt_template("{{ 10**10**10 }}", system=None)
    assert (
        template.messages(RECORD, kind="column", max_bytes=SMALL)[0]["content"] == "1" + "0" * 100
    )
    message = attempt("{{ 10**(10**10) }}")
    assert message == "template stopped: it would build a number of more than 14300 bits"
    assert "number of more than" in attempt("{% set n = 10**4000 %}{{ n * n }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ '%99999999999s' % 'a' }}",
        "{{ '%.99999999999f' % 1.5 }}",
        "{{ '%*s' % (10**10, 'a') }}",
        "{{ '%(a)s' * 40 % {'a': 'x' * 900} }}",
        "{{ '%99999999999s' | format('a') }}",
        "{{ '{:99999999999}'.format('a') }}",
        "{{ '{:{}}'.format('a', 10**10) }}",
        "{{ '{0}{0}{0}{0}{0}{0}{0}{0}'.format('x' * 900) }}",
        "{{ '{a:>99999999999}'.format_map({'a': 1}) }}",
    ],
)
def test_format_widths_past_the_limit_are_refused(source: str) -> None:
    assert "would build a text longer than the limit of 1000 bytes" in attempt(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a'.center(10**10) }}",
        "{{ 'a'.ljust(10**10) }}",
        "{{ 'a'.zfill(10**10) }}",
        "{{ ('a' | safe).rjust(10**10) }}",
        "{{ (2).to_bytes(10**10, 'big') }}",
        "{{ 'a' | center(10**10) }}",
        "{{ 'a' | center(10000000000) }}",
        "{{ text | indent(10**10) }}",
        "{{ [1] | batch(10**10, 'x') | list }}",
        "{{ row | tojson(indent=10**10) }}",
    ],
)
def test_huge_sizes_given_to_methods_and_filters_are_refused(source: str) -> None:
    message = attempt(source)
    assert message == (
        "template stopped: it passes 10000000000 as an argument, more than the limit of "
        "1000 bytes (CHATBATCH_MAX_LINE_BYTES)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('a' * 900) | replace('a', 'b' * 900) }}",
        "{{ ('a' * 900).replace('a', 'b' * 900) }}",
        "{{ ('x' * 900).join(range(1000) | map('string')) }}",
        "{{ range(1000) | join('x' * 900) }}",
        "{{ ('\t' * 900).expandtabs(900) }}",
        "{{ text | wordwrap(1, wrapstring='x' * 900) }}",
        "{{ ('a\n' * 400) | indent('x' * 900) }}",
    ],
)
def test_operations_that_repeat_an_argument_are_refused_before_they_run(source: str) -> None:
    assert "would build a text longer than the limit" in attempt(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% set x = 'a' * 600 %}{% set y = x ~ x %}{{ y }}",
        "{% set x = 'a' * 600 %}{% set y = x + x %}{{ y }}",
        "{% set x = ['a' * 600] %}{% set y = [x, x] %}{{ y }}",
        "{% set x = {'a': 'b' * 600} %}{{ {'x': x, 'y': x} }}",
        "{% set x = dict(a='b' * 600) %}{{ dict(a=x, b=x) }}",
        "{% set x %}{% for i in range(100) %}{{ text }}{% endfor %}{% endset %}{{ x }}",
        "{% macro m() %}{% for i in range(100) %}{{ text }}{% endfor %}{% endmacro %}{{ m() }}",
        "{% for i in range(1000) %}{{ text }}{% endfor %}",
    ],
)
def test_values_and_output_longer_than_the_limit_are_refused(source: str) -> None:
    assert "would build a text longer than the limit of 1000 bytes" in attempt(source)


def test_a_render_may_build_only_so_much_in_all() -> None:
    message = attempt("{{ range(100000) | map('center', 900) | list | length }}")
    assert message == (
        "template stopped: it built more than 8 times the limit of 1000 bytes "
        "(CHATBATCH_MAX_LINE_BYTES) in values"
    )


def test_the_output_limit_counts_bytes() -> None:
    template = prompt_template("{{ text }}", system=None)
    fits = {"text": "é" * 500}  # 1,000 bytes
    assert template.messages(fits, kind="column", max_bytes=SMALL)[0]["content"] == "é" * 500
    with pytest.raises(RenderError, match="longer than the limit of 1000 bytes"):
        template.messages({"text": "é" * 501}, kind="column", max_bytes=SMALL)


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set s = 'ab' * 400 %}{% for a in s %}{% for b in s %}{% for c in s %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "{% for i in range(10) recursive %}{% if loop.depth < 50 %}{{ loop(range(10)) }}"
        "{% endif %}{% endfor %}",
        "{% macro m(n) %}{% if n < 60 %}{{ m(n + 1) }}{{ m(n + 1) }}{% endif %}{% endmacro %}"
        "{{ m(0) }}",
    ],
)
def test_loops_stop_at_the_time_limit(source: str) -> None:
    started = time.monotonic()
    message = attempt(source)
    assert message == "template stopped: it took longer than the limit of 0.3 s per record"
    assert time.monotonic() - started < QUICK + 1.0


def test_the_time_limit_is_for_both_templates_of_a_record() -> None:
    slow = "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}x"
    template = prompt_template(slow, system=slow)
    alone = prompt_template(slow, system=None)
    one = min(_seconds_to_render(alone) for _ in range(3))  # the fastest of one template
    # Both templates take at least twice that together, so 1.5x it cannot be enough.
    with pytest.raises(RenderError, match="took longer than the limit"):
        template.messages(RECORD, kind="column", max_bytes=SMALL, seconds=one * 1.5)


def _seconds_to_render(template: PromptTemplate) -> float:
    started = time.monotonic()
    template.messages(RECORD, kind="column", max_bytes=SMALL)  # the default: 2 s is plenty
    return time.monotonic() - started


@pytest.mark.parametrize("name", ["namespace", "cycler", "joiner", "lipsum"])
def test_globals_with_state_or_unbounded_output_are_gone(name: str) -> None:
    message = attempt(f"{{% set x = {name}() %}}x")
    assert message == (
        f"template uses {name!r}, which chatbatch templates do not offer (it could grow "
        "without limit)"
    )


def test_namespace_doubling_is_refused() -> None:
    source = (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}"
    )
    assert "'namespace', which chatbatch templates do not offer" in attempt(source)


def test_constants_are_not_computed_while_compiling() -> None:
    started = time.monotonic()
    template = prompt_template("{{ 'a' | center(10000000000) }}{{ 'x' | upper }}", system=None)
    assert time.monotonic() - started < 1.0
    with pytest.raises(RenderError, match="passes 10000000000 as an argument"):
        template.messages(RECORD, kind="column", max_bytes=SMALL)


# Templates as the README and examples/ use them, and the usual Jinja constructs: they render
# as they did in the plain sandbox.
ORDINARY = [
    "Review of a {{ product }}: {{ text }}",
    "{{ row['review text'] }} / {{ row.id }}",
    "You rate {{ product | upper }}s.",
    "{{ text }}{% if note is defined %} ({{ note }}){% endif %}",
    "{{ meta.author }}",
    "{% for tag in tags %}{{ loop.index }}/{{ loop.length }} {{ tag | title }}"
    "{{ ', ' if not loop.last }}{% else %}none{% endfor %}",
    "{% for k, v in meta | dictsort %}{{ k }}={{ v }};{% endfor %}",
    "{% for t in tags | sort | unique %}{{ loop.cycle('odd', 'even') }}:{{ t }} {% endfor %}",
    "{% macro quote(x, mark='\"') %}{{ mark }}{{ x }}{{ mark }}{% endmacro %}{{ quote(text) }}",
    "{% macro box(w) %}[{{ caller() | center(w) }}]{% endmacro %}"
    "{% call box(20) %}{{ product }}{% endcall %}",
    "{% filter upper %}{{ product }} {{ text | truncate(9, true, '…', 0) }}{% endfilter %}",
    "{% set label %}{{ product }}-{{ row.id }}{% endset %}{{ label ~ '!' }} {{ 'x' * 3 }}",
    "{{ '%s: %d tags' | format(product, tags | length) }} {{ '%-8s|' % product }}",
    "{{ '{0} ({1})'.format(product, row.id) }} {{ '{text:.5}'.format_map(row) }}",
    "{{ tags | join(', ') }} {{ tags | map('upper') | list }} {{ text.split() | join('_') }}",
    "{{ (tags | length) + 1 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ [1, 2] + [3] }} {{ range(3) | list }}",
    "{{ text | wordwrap(6) }}\n{{ text | indent(2, true) }}\n{{ meta | tojson }}",
    "{{ text | replace('fast', 'slowly') }} {{ text | length }} {{ dict(a=1) }}",
    "{{ missing | default('none') }} {{ (row.get('nope', 0)) }} {{ 'a' if text else 'b' }}",
    "{% for i in range(3) %}{% for j in range(2) %}{{ i }}{{ j }} {% endfor %}{% endfor %}",
    "{% for item in nested recursive %}{{ item.name }}"
    "{% if item.children %}({{ loop(item.children) }}){% endif %}{% endfor %}",
    "{% autoescape true %}{{ '<b>' ~ product }}{% endautoescape %}",
]
ORDINARY_RECORD: dict[str, Any] = {
    "id": "7",
    "product": "kettle",
    "text": "Boils fast.",
    "review text": "fine",
    "note": "n",
    "meta": {"author": "x", "lang": "de"},
    "tags": ["b", "a", "c", "a"],
    "nested": [{"name": "a", "children": [{"name": "b", "children": []}]}],
}


@pytest.mark.parametrize("source", ORDINARY)
def test_ordinary_templates_render_as_before(source: str) -> None:
    plain = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    expected = plain.from_string(source).render({"row": ORDINARY_RECORD, **ORDINARY_RECORD})
    template = prompt_template(source, system=None)
    messages = template.messages(ORDINARY_RECORD, kind="field", max_bytes=LIMIT)
    assert messages[0]["content"] == expected


def test_the_example_prompt_renders_as_before() -> None:
    source = (EXAMPLES / "review_prompt.txt").read_text()
    plain = SandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    with (EXAMPLES / "reviews.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:50]
    template = prompt_template(f"@{EXAMPLES / 'review_prompt.txt'}", system=None)
    for row in rows:
        expected = plain.from_string(source).render({"row": row, **row})
        assert template.messages(row, kind="column", max_bytes=LIMIT)[0]["content"] == expected


# --- columns the template uses, checked against a header --------------------------------------


def test_unknown_columns_are_named_once_with_suggestions() -> None:
    template = prompt_template("{{ txt }} {{ prodct }} {{ row.id }} {{ zzz }}", system="{{ txt }}")
    assert template.unknown_columns(["id", "product", "text"], kind="column") == [
        "system template uses column 'txt' (did you mean 'text'?), which the file does not have "
        "(columns: id, product, text)",
        "template uses columns 'txt' (did you mean 'text'?), 'prodct' (did you mean "
        "'product'?) and 'zzz', which the file does not have (columns: id, product, text)",
    ]
    assert template.unknown_columns(["txt", "prodct", "zzz", "id"], kind="column") == []


def test_names_tested_for_set_or_global_are_not_columns() -> None:
    source = (
        "{{ text }}{% if note is defined %}{{ note }}{% endif %}{{ extra | default('') }}"
        "{% set local = 1 %}{{ local }}{% for x in range(2) %}{{ x }}{{ loop.index }}{% endfor %}"
        "{{ row['any'] }}{{ dict(a=1) }}"
    )
    template = prompt_template(source, system=None)
    assert template.unknown_columns(["text"], kind="column") == []
