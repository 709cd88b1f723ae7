"""Prompt-token and input-cost estimates: the documented rule of thumb, exactly."""

from __future__ import annotations

from decimal import Decimal

from chatbatch.input.estimates import estimated_input_cost, estimated_prompt_tokens, message_chars
from chatbatch.rules.pricing import PriceTable


def body(*contents: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents]}


def test_characters_of_every_message_divided_by_four_rounded_up() -> None:
    assert estimated_prompt_tokens(body("abcd")) == 1
    assert estimated_prompt_tokens(body("abcde")) == 2
    assert estimated_prompt_tokens(body("abc", "de")) == 2  # summed per request, then rounded
    assert estimated_prompt_tokens(body("x" * 400)) == 100


def test_system_messages_count_too() -> None:
    request = {
        "messages": [
            {"role": "system", "content": "12345678"},
            {"role": "user", "content": "1234"},
        ]
    }
    assert estimated_prompt_tokens(request) == 3


def test_text_parts_count_and_other_parts_do_not() -> None:
    parts = [
        {"type": "text", "text": "abcdefgh"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        "not a part",
    ]
    assert message_chars(body(parts)) == 8
    assert estimated_prompt_tokens(body(parts)) == 2


def test_odd_bodies_estimate_zero_rather_than_fail() -> None:
    assert estimated_prompt_tokens({}) == 0
    assert estimated_prompt_tokens({"messages": "hi"}) == 0
    assert estimated_prompt_tokens({"messages": [None, {"role": "assistant"}]}) == 0
    assert estimated_prompt_tokens(body(None, 5)) == 0


def test_non_ascii_counts_characters_not_bytes() -> None:
    assert message_chars(body("héllo😀")) == 6


PRICES = PriceTable.model_validate(
    {
        "currency": "EUR",
        "models": {
            "gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"},
            "deepseek-*": {"input": "0.55", "output": "2.19"},
        },
    }
)


def test_input_cost_is_exact_at_the_uncached_input_price() -> None:
    cost = estimated_input_cost({"gpt-4o-mini": 1_000_000, "deepseek-r1": 2_000}, PRICES)
    assert cost.amount == Decimal("0.15") + Decimal("0.0011")
    assert not cost.missing


def test_an_unpriced_model_makes_the_cost_unknown() -> None:
    cost = estimated_input_cost({"gpt-4o-mini": 1_000_000, "claude": 10}, PRICES)
    assert cost.amount is None
    assert set(cost.missing) == {"claude"}
    assert cost.priced == Decimal("0.15")
