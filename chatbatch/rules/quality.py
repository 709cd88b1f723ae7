"""How answers agree with trusted (gold) labels, from the labels alone: the comparison rule and
the figures people otherwise build in spreadsheets (accuracy, Cohen's kappa, per-class
precision, recall and F1, a confusion table).

A row with a gold label but no usable answer (failed, expired, cancelled, not following the
schema) is *unanswered*: it counts as a disagreement in accuracy, recall and kappa, so a run
cannot score better by failing its hard rows, and is left out of the confusion table and of
precision (it predicted nothing). Rows not finished yet are *pending* and count nowhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from chatbatch.rules.states import ACTIVE_STATUSES, ANSWERED_STATUSES
from chatbatch.rules.structured import answer_fields

NO_ANSWER = None  # the answer side of an unanswered row
ANSWERED = frozenset(status.value for status in ANSWERED_STATUSES)
UNFINISHED = frozenset(status.value for status in ACTIVE_STATUSES)


def label_key(value: Any, *, case_sensitive: bool = False) -> str | None:
    """The form two labels are compared in: trimmed text, case-folded unless ``case_sensitive``;
    a number in its shortest form (``"1.50"``, ``1.5`` and ``"15e-1"`` are one label); None for
    a missing or blank label, or one that is not a single value (a list, an object)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    if not text:
        return None
    number = _number(text)
    if number is not None:
        return number
    return text if case_sensitive else text.casefold()


def _number(text: str) -> str | None:
    """``text`` as a canonical decimal when it is a finite number, else None."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    normal = value.normalize()
    return format(normal if normal != 0 else Decimal(0), "f")


def answer_label(content: str | None, field: str | None, *, case_sensitive: bool) -> str | None:
    """The label an answer gives: with ``field``, that field of the JSON object it holds;
    without, the whole content. None when there is none to read."""
    if content is None:
        return None
    if field is None:
        return label_key(content, case_sensitive=case_sensitive)
    fields = answer_fields(content)  # a JSON object, fenced or not, as the schema check reads
    return None if fields is None else label_key(fields.get(field), case_sensitive=case_sensitive)


def answer_of(
    status: str, content: str | None, valid: bool | None, *, field: str | None, case_sensitive: bool
) -> str | None:
    """The label a request's answer gives on ``field``, or NO_ANSWER: failed, expired,
    cancelled, not following the schema, or without that field."""
    if status not in ANSWERED or valid is False:
        return NO_ANSWER
    return answer_label(content, field, case_sensitive=case_sensitive)


@dataclass(frozen=True)
class GoldRule:
    """How a batch loaded with ``--gold-column`` compares answers with gold labels."""

    column: str
    field: str | None
    case_sensitive: bool

    def match_cell(
        self, status: str, record: dict[str, Any], content: str | None, valid: bool | None
    ) -> str | None:
        """``gold_match``: ``true`` when the answer's label is the row's gold label, ``false``
        when it is not or the finished row has no usable answer (as ``status`` counts it),
        empty for a row without a gold label or not finished yet."""
        gold = label_key(record.get(self.column), case_sensitive=self.case_sensitive)
        if gold is None or status in UNFINISHED:
            return None
        answer = answer_of(
            status, content, valid, field=self.field, case_sensitive=self.case_sensitive
        )
        return "true" if answer == gold else "false"


@dataclass(frozen=True)
class ClassFigures:
    """One label's precision (None when no answer gave it), recall (None when no row has it as
    gold), F1 (None when either is), and support (rows with it as their gold label)."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class Agreement:
    """How a run's answers agree with gold, over the rows with a gold label that finished."""

    gold_rows: int  # finished rows with a gold label: what accuracy is over
    answered: int
    unanswered: int
    agreed: int
    accuracy: float | None
    kappa: float | None
    per_class: dict[str, ClassFigures]
    confusion: dict[str, dict[str, int]]  # gold label → answer label → rows (answered only)


def agreement(pairs: Mapping[tuple[str, str | None], int]) -> Agreement:
    """The figures from counts of (gold label, answer label or ``NO_ANSWER``) pairs."""
    total = sum(pairs.values())
    agreed = sum(n for (gold, answer), n in pairs.items() if gold == answer)
    unanswered = sum(n for (_, answer), n in pairs.items() if answer is NO_ANSWER)
    confusion: dict[str, dict[str, int]] = {}
    for (gold, answer), n in sorted(pairs.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        if answer is not NO_ANSWER:
            confusion.setdefault(gold, {})[answer] = n
    return Agreement(
        gold_rows=total,
        answered=total - unanswered,
        unanswered=unanswered,
        agreed=agreed,
        accuracy=agreed / total if total else None,
        kappa=cohens_kappa(pairs),
        per_class=_per_class(pairs),
        confusion=confusion,
    )


def cohens_kappa(pairs: Mapping[tuple[str, Any], int]) -> float | None:
    """Cohen's kappa of the two raters behind ``pairs`` (``NO_ANSWER`` is a category of its
    own, which no gold label is): agreement beyond what their label frequencies give by
    chance. None without rows; 1.0 when both always give the one same label."""
    total = sum(pairs.values())
    if not total:
        return None
    first: Counter[Any] = Counter()
    second: Counter[Any] = Counter()
    for (a, b), n in pairs.items():
        first[a] += n
        second[b] += n
    observed = sum(n for (a, b), n in pairs.items() if a == b) / total
    expected = sum(first[label] * second[label] for label in first) / total**2
    if expected == 1:
        return 1.0
    return (observed - expected) / (1 - expected)


def _per_class(pairs: Mapping[tuple[str, str | None], int]) -> dict[str, ClassFigures]:
    """Precision, recall, F1 and support of every label that is a gold label or an answer."""
    labels = sorted({gold for gold, _ in pairs} | {a for _, a in pairs if a is not NO_ANSWER})
    figures = {}
    for label in labels:
        hits = pairs.get((label, label), 0)
        support = sum(n for (gold, _), n in pairs.items() if gold == label)
        answered_as = sum(n for (_, answer), n in pairs.items() if answer == label)
        precision = hits / answered_as if answered_as else None
        recall = hits / support if support else None
        figures[label] = ClassFigures(precision, recall, _f1(precision, recall), support)
    return figures


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    both = precision + recall
    return 2 * precision * recall / both if both else 0.0
