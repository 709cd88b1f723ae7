"""Gold-label scoring: the comparison rule, and every figure checked against a textbook value or
a computation of its own from the individual rows (not from the counted pairs)."""

from __future__ import annotations

import random

import pytest
from quality_reference import independent_figures

from chatbatch.rules.quality import NO_ANSWER, agreement, answer_label, cohens_kappa, label_key


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("  Positive ", "positive"),
        ("POSITIVE", "positive"),
        ("1.50", "1.5"),
        (1.5, "1.5"),
        ("15e-1", "1.5"),
        ("3", "3"),
        (3.0, "3"),
        ("-0", "0"),
        (True, "true"),
        ("", None),
        ("   ", None),
        (None, None),
        (["a"], None),
        ({"a": 1}, None),
        ("NaN", "nan"),  # not a finite number: compared as text
    ],
)
def test_labels_compare_trimmed_caseless_and_numbers_as_numbers(given, key) -> None:
    assert label_key(given) == key


def test_case_counts_only_when_asked() -> None:
    assert label_key(" Positive", case_sensitive=True) == "Positive"
    assert label_key("Positive", case_sensitive=True) != label_key("positive", case_sensitive=True)


@pytest.mark.parametrize(
    ("content", "field", "label"),
    [
        ('{"label": "Negative", "confidence": 0.9}', "label", "negative"),
        ('```json\n{"label": "neutral"}\n```', "label", "neutral"),  # fenced, as models do
        ('{"label": ["a"]}', "label", None),
        ('{"other": "x"}', "label", None),
        ("not json", "label", None),
        ('["label"]', "label", None),
        (None, "label", None),
        (" Negative\n", None, "negative"),  # no field: the whole answer
    ],
)
def test_the_answer_label_is_the_field_of_a_json_answer(content, field, label) -> None:
    assert answer_label(content, field, case_sensitive=False) == label


def test_kappa_matches_the_textbook_example() -> None:
    # 50 items, two raters: 20 both yes, 5 yes/no, 10 no/yes, 15 both no -> kappa 0.4.
    pairs = {("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}
    assert cohens_kappa(pairs) == pytest.approx(0.4)


def test_perfect_and_chance_agreement() -> None:
    assert cohens_kappa({("a", "a"): 5, ("b", "b"): 5}) == pytest.approx(1.0)
    assert cohens_kappa({("a", "a"): 7}) == 1.0  # one label both sides: no chance to disagree
    assert cohens_kappa({("a", "a"): 1, ("a", "b"): 1, ("b", "a"): 1, ("b", "b"): 1}) == 0.0
    assert cohens_kappa({}) is None


@pytest.mark.parametrize("seed", range(5))
def test_random_runs_score_as_the_definitions_say(seed: int) -> None:
    rng = random.Random(seed)
    golds = ["positive", "negative", "neutral"]
    answers = [*golds, "mixed", None]  # an answer no gold has, and unanswered rows
    rows = [(rng.choice(golds), rng.choice(answers)) for _ in range(rng.randint(20, 300))]
    counted: dict[tuple[str, str | None], int] = {}
    for row in rows:
        counted[row] = counted.get(row, 0) + 1

    scored = agreement(counted)
    expected = independent_figures(rows)

    assert scored.gold_rows == len(rows)
    assert scored.unanswered == sum(1 for _, a in rows if a is None)
    assert scored.answered == len(rows) - scored.unanswered
    assert scored.accuracy == pytest.approx(expected["accuracy"])
    assert scored.kappa == pytest.approx(expected["kappa"])
    got = {label: (f.precision, f.recall, f.f1, f.support) for label, f in scored.per_class.items()}
    assert got.keys() == expected["per_class"].keys()
    for label, want in expected["per_class"].items():
        assert got[label] == pytest.approx(want), label
    for gold, row in scored.confusion.items():
        for answer, n in row.items():
            assert n == sum(1 for g, a in rows if (g, a) == (gold, answer))
    assert sum(sum(row.values()) for row in scored.confusion.values()) == scored.answered
    assert NO_ANSWER is None
