"""Dry-run output estimates: max_tokens where set (times n), else the model's average in earlier
batches, else unknown, and always saying which."""

from __future__ import annotations

import pytest

from chatbatch.input.estimates import (
    OutputTally,
    estimated_output,
    requested_output_tokens,
)


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 40}, 40),
        ({"max_tokens": 50, "n": 3}, 150),
        ({"max_tokens": 0}, None),
        ({"max_tokens": True}, None),
        ({"max_tokens": "50"}, None),
        ({}, None),
    ],
)
def test_the_limit_a_request_sets(body, tokens) -> None:
    assert requested_output_tokens(body) == tokens


def tally(*bodies: dict) -> OutputTally:
    counted = OutputTally()
    for body in bodies:
        counted.add(body)
    return counted


def test_limits_where_set_and_the_earlier_average_for_the_rest() -> None:
    mixed = tally({"max_tokens": 10}, {"max_tokens": 10}, {}, {})
    found = estimated_output(mixed, (12.5, 40))
    assert found.tokens == 20 + 25
    assert found.basis == (
        "max_tokens (an upper bound); the average of 40 earlier answer(s), 12.5 tokens each"
    )
    assert estimated_output(tally({"max_tokens": 10}), None).tokens == 10
    assert estimated_output(tally({}, {}), (3.2, 1)).tokens == 7  # rounded up


def test_unknown_without_a_limit_or_an_earlier_answer() -> None:
    found = estimated_output(tally({"max_tokens": 10}, {}), None)
    assert found.tokens is None
    assert found.basis == "1 request(s) set no max_tokens and no earlier answer exists"
