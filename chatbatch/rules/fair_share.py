"""Fair share between running batches: how one claim divides its rows among them.

Weighted fair queuing within a claim, with no state kept between claims: a batch's k-th due row
gets the virtual time ``(k - 1 + E) / w``, where ``w = 1 + priority`` and ``E`` is drawn from
Exp(1) per batch and claim; the claim takes the rows with the smallest times. Over a claim of
many rows each batch with due rows gets about ``w / sum(w)`` of them; over many claims of one row
each, a batch wins with probability exactly ``w / sum(w)`` (the first of several Poisson clocks
of rates ``w``). So a small batch loaded behind a large one shares the provider at once, and a
higher priority gets a larger share but never all of it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_PRIORITY = 100
# A batch offers this many times its expected rows, plus a few: room for its random start and
# for rows another claim has locked. Rows it could not offer a claim takes in due order.
CANDIDATES_PER_EXPECTED_ROW = 2
EXTRA_CANDIDATES = 2


@dataclass(frozen=True)
class Share:
    """One running batch's part in a claim: how many of its next due rows are candidates, and
    the virtual start and weight that order them against the other batches' rows."""

    batch_id: str
    candidates: int
    start: float
    weight: float


def weight(priority: int) -> float:
    """A batch's weight: 1 + its priority (0 to ``MAX_PRIORITY``)."""
    return 1.0 + min(max(priority, 0), MAX_PRIORITY)


def shares(
    runnable: Iterable[tuple[str, int]],
    *,
    limit: int,
    capped: Mapping[str, int],
    rng: random.Random | None = None,
) -> list[Share]:
    """The shares of a claim of ``limit`` rows among ``runnable`` (batch id, priority) pairs; a
    batch in ``capped`` offers at most that many rows (its cost cap), none if it is spent."""
    draw = rng or random
    batches = [(batch_id, weight(priority)) for batch_id, priority in runnable]
    total = sum(w for _, w in batches)
    result = []
    for batch_id, w in batches:
        expected = limit * w / total
        offered = min(limit, math.ceil(CANDIDATES_PER_EXPECTED_ROW * expected) + EXTRA_CANDIDATES)
        candidates = min(offered, capped.get(batch_id, offered))
        if candidates > 0:
            result.append(Share(batch_id, candidates, draw.expovariate(1.0), w))
    return result
