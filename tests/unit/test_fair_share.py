"""How one claim is shared between running batches (``chatbatch.rules.fair_share``)."""

from __future__ import annotations

import random

from chatbatch.rules.fair_share import MAX_PRIORITY, shares, weight


def test_weight_is_one_plus_priority_within_bounds() -> None:
    assert [weight(p) for p in (0, 1, 9)] == [1.0, 2.0, 10.0]
    assert weight(-5) == 1.0 and weight(10_000) == 1.0 + MAX_PRIORITY


def test_each_batch_offers_about_twice_its_share_and_a_spent_cap_none() -> None:
    """Weights 1, 3, 1, 1 of 6: a claim of 10 expects 1.7, 5, 1.7, 1.7 rows of them; each
    offers twice that and two more, at most the claim, at most its cap."""
    parts = shares([("a", 0), ("b", 2), ("c", 0), ("d", 0)], limit=10, capped={"c": 0, "d": 3})
    offered = {part.batch_id: (part.candidates, part.weight) for part in parts}
    assert offered == {"a": (6, 1.0), "b": (10, 3.0), "d": (3, 1.0)}


def test_one_row_goes_to_each_batch_in_proportion_to_its_weight() -> None:
    """The first row of each batch has virtual time E / w (E ~ Exp(1)): the smallest belongs to
    batch i with probability w_i / sum(w), whatever the weights."""
    rng = random.Random(3)
    wins = {"low": 0, "high": 0}
    for _ in range(20_000):
        parts = shares([("low", 0), ("high", 3)], limit=1, capped={}, rng=rng)
        first = min(parts, key=lambda part: part.start / part.weight)
        wins[first.batch_id] += 1
    assert abs(wins["low"] / 20_000 - 0.2) < 0.015, wins
