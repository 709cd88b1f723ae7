"""Prompt templates: rendered in a sandbox, and every failure named so a user can fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbatch.errors import InputError
from chatbatch.templating import (
    PromptTemplate,
    RenderError,
    names_text,
    prompt_template,
    read_template_text,
)

RECORD = {"id": "7", "product": "kettle", "text": "Boils fast."}


def test_renders_columns_into_the_user_message() -> None:
    template = prompt_template("Review of a {{ product }}: {{ text }}", system=None)
    assert template.messages(RECORD, kind="column") == [
        {"role": "user", "content": "Review of a kettle: Boils fast."}
    ]


def test_system_message_comes_first_and_is_a_template_too() -> None:
    template = prompt_template("{{ text }}", system="You rate {{ product | upper }}s.")
    assert template.messages(RECORD, kind="column") == [
        {"role": "system", "content": "You rate KETTLEs."},
        {"role": "user", "content": "Boils fast."},
    ]


def test_any_column_name_through_row() -> None:
    template = prompt_template("{{ row['review text'] }} / {{ row.id }}", system=None)
    record = {"id": "1", "review text": "fine"}
    assert template.messages(record, kind="column")[0]["content"] == "fine / 1"


def test_a_column_named_row_wins_over_the_record() -> None:
    template = prompt_template("{{ row }}", system=None)
    assert template.messages({"row": "5"}, kind="column")[0]["content"] == "5"


def test_missing_column_is_named_with_the_columns_there_are() -> None:
    template = prompt_template("{{ txt }}", system=None)
    with pytest.raises(RenderError) as info:
        template.messages(RECORD, kind="column")
    assert str(info.value) == (
        "template uses column 'txt', which the file does not have (columns: id, product, text)"
    )


def test_missing_key_of_the_record_through_row_is_a_missing_field() -> None:
    template = prompt_template("{{ row['note'] }}", system=None)
    with pytest.raises(RenderError, match="template uses field 'note', which this record does not"):
        template.messages({"a": 1}, kind="field")


def test_missing_column_in_the_system_template_says_so() -> None:
    template = prompt_template("{{ text }}", system="{{ persona }}")
    with pytest.raises(RenderError, match=r"^system template uses column 'persona'"):
        template.messages(RECORD, kind="column")


def test_optional_fields_can_be_tested_for() -> None:
    template = prompt_template(
        "{{ text }}{% if note is defined %} ({{ note }}){% endif %}", system=None
    )
    assert template.messages({"text": "a"}, kind="field")[0]["content"] == "a"
    assert template.messages({"text": "a", "note": "n"}, kind="field")[0]["content"] == "a (n)"


def test_nested_fields_and_their_absence() -> None:
    template = prompt_template("{{ meta.author }}", system=None)
    assert template.messages({"meta": {"author": "x"}}, kind="field")[0]["content"] == "x"
    with pytest.raises(RenderError, match="has no attribute 'author'"):
        template.messages({"meta": {}}, kind="field")


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    template = prompt_template("{{ text.__class__.__mro__ }}", system=None)
    with pytest.raises(RenderError, match="SecurityError"):
        template.messages(RECORD, kind="column")


def test_runtime_errors_are_the_records_problem() -> None:
    template = prompt_template("{{ text + 1 }}", system=None)
    with pytest.raises(RenderError, match="template failed: TypeError"):
        template.messages(RECORD, kind="column")


def test_an_empty_user_message_is_refused() -> None:
    template = prompt_template("{{ text | trim }}", system=None)
    with pytest.raises(RenderError, match="rendered an empty message"):
        template.messages({"text": "  "}, kind="column")


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
    assert template.messages(RECORD, kind="column")[0]["content"] == "Label: Boils fast."


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
