"""When to poll: a schedule of poll ages planned from the completion times seen so far.

Pure functions and small value objects; the engine hands in what polling has shown of a
model's completion times and asks for the age of a request's next poll. A fixed geometric
schedule is used until a model has enough completions; then ``plan_poll_ages`` picks the ages
that minimise the mean delay between a result being ready and our fetching it, spending at most
``gets_per_result`` GETs on average.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GRID_POINTS = 96  # candidate poll ages, at quantiles of the sample; planning costs O(GRID^2)
BUDGET_MARGIN = 0.9  # plan within 90% of the budget: the estimate is only an estimate
FILL_POINTS = 48  # more candidates where the quantiles are further apart than the longest wait
LAMBDA_STEPS = 30  # bisection steps on the price of delay


@dataclass(frozen=True)
class GeometricPolls:
    """The fallback: first poll ``first`` seconds after submission, each wait ``factor`` times
    the last, never longer than ``longest_wait``."""

    first: float
    factor: float
    longest_wait: float

    def next_age(self, age: float) -> float:
        """Age (seconds since submission) of the next poll for a request ``age`` seconds old."""
        if self.first <= 0:
            return max(age, 0.0)
        poll = self.first
        wait = min(self.first, self.longest_wait)
        while poll <= age and wait < self.longest_wait and self.factor > 1:
            wait = min(self.longest_wait, wait * self.factor)
            poll += wait
        if poll > age:
            return poll
        return poll + (math.floor((age - poll) / wait) + 1) * wait


@dataclass(frozen=True)
class PlannedPolls:
    """Poll at the planned ages; past the last one, as the fallback schedule would."""

    ages: tuple[float, ...]
    tail: GeometricPolls

    def next_age(self, age: float) -> float:
        index = bisect.bisect_right(self.ages, age)
        if index < len(self.ages):
            return self.ages[index]
        return self.tail.next_age(age)


PollSchedule = GeometricPolls | PlannedPolls


def completion_distribution(
    observations: Iterable[tuple[float, float | None]],
) -> tuple[list[float], list[float]]:
    """Kaplan-Meier estimate of completion times (seconds after submission) from
    ``(pending_until, ready_by)`` pairs: a result found ready by ``ready_by`` was still pending
    at ``pending_until`` (it is placed midway); ``ready_by`` None is a request still pending at
    ``pending_until`` (right-censored). Counting the pending ones is what keeps a batch in
    progress, whose slow requests have not finished yet, from looking fast.

    Returns ascending times and their probability masses. Mass the estimate leaves beyond the
    last completion is put at twice the longest age seen, so a plan reaches out that far.
    """
    points = sorted(
        ((low + high) / 2, True) if high is not None else (low, False) for low, high in observations
    )
    at_risk, survival = len(points), 1.0
    times: list[float] = []
    masses: list[float] = []
    for time, group in itertools.groupby(points, key=lambda point: point[0]):
        flags = [ready for _, ready in group]
        ready = sum(flags)
        if ready:
            drop = survival * ready / at_risk
            times.append(time)
            masses.append(drop)
            survival -= drop
        at_risk -= len(flags)
    if points and survival > 1e-9:
        times.append(2 * max(points[-1][0], times[-1] if times else 0.0, 1e-3))
        masses.append(survival)
    return times, masses


class PollPlanner:
    """Hands out each model's poll schedule: the fallback until a plan was made from
    ``warm_up`` completions or more. Shared by a worker's task threads; ``gets_per_result``
    None keeps every model on ``fallback``."""

    def __init__(
        self, fallback: GeometricPolls, gets_per_result: float | None, *, warm_up: int = 50
    ) -> None:
        self._fallback = fallback
        self.gets_per_result = gets_per_result
        self._warm_up = warm_up
        self._plans: dict[str, PlannedPolls] = {}

    def schedule(self, model: str) -> PollSchedule:
        return self._plans.get(model, self._fallback)

    def replan(self, model: str, observations: Sequence[tuple[float, float | None]]) -> bool:
        """Plan ``model``'s polls from fresh observations; False when there are too few."""
        completed = sum(1 for _, ready_by in observations if ready_by is not None)
        if self.gets_per_result is None or completed < self._warm_up:
            return False
        times, masses = completion_distribution(observations)
        ages = plan_poll_ages(
            times,
            max(1.0, self.gets_per_result * BUDGET_MARGIN),
            masses=masses,
            longest_wait=self._fallback.longest_wait,
        )
        self._plans = {**self._plans, model: PlannedPolls(ages, self._fallback)}
        return True


def plan_poll_ages(
    sample: Sequence[float],
    gets_per_result: float,
    *,
    masses: Sequence[float] | None = None,
    longest_wait: float = math.inf,
) -> tuple[float, ...]:
    """The poll ages minimising mean fetch delay with at most ``gets_per_result`` GETs per
    result on average, for completion times distributed like ``sample`` (each with its
    probability ``masses``, equal by default), never more than ``longest_wait`` apart (the
    slowest results bound how long a batch takes; the mean alone would let their polls drift).

    Dynamic programming over candidate ages at the sample's quantiles: with ``W[i]`` the cost
    still to come for a request pending at age ``g[i]`` (weighted by how many are),
    ``W[i] = min_j S(g[i]) + price * delay(i, j) + W[j]`` where a GET costs 1 per pending request
    and ``delay(i, j)`` sums ``g[j] - T`` over results ready in ``(g[i], g[j]]``. The price of
    delay is bisected until the GET budget is just met.
    """
    weights = masses if masses is not None else [1.0] * len(sample)
    pairs = sorted((t, w) for t, w in zip(sample, weights, strict=True) if t >= 0 and w > 0)
    if not pairs:
        raise ValueError("no completion times to plan from")
    times = [t for t, _ in pairs]
    total = sum(w for _, w in pairs)
    mass_by = [0.0]  # probability mass ready by times[k - 1]
    time_mass_by = [0.0]  # and the sum of time * mass over it
    for t, w in pairs:
        mass_by.append(mass_by[-1] + w / total)
        time_mass_by.append(time_mass_by[-1] + t * w / total)
    grid = _candidate_ages(times, mass_by, longest_wait)
    below = [bisect.bisect_right(times, g) for g in grid]  # how many times are ready by g

    def plan(price: float) -> tuple[list[int], float]:
        """The cheapest path of grid indices for ``price`` and its mean GETs per result."""
        m = len(grid)
        cost = [0.0] * (m + 1)  # cost[m]: the start, age 0 with everything pending
        step = [m - 1] * (m + 1)
        for i in [*range(m - 1, -1, -1), m]:  # the start, m, needs every other state first
            done = 0 if i == m else below[i]
            pending = 1.0 - mass_by[done]
            if pending <= 1e-12:
                continue
            age = 0.0 if i == m else grid[i]
            best, best_j = float("inf"), m - 1
            for j in range(0 if i == m else i + 1, m):
                if grid[j] - age > longest_wait and j > (0 if i == m else i + 1):
                    break
                ready = mass_by[below[j]] - mass_by[done]
                delay = ready * grid[j] - (time_mass_by[below[j]] - time_mass_by[done])
                candidate = pending + price * delay + cost[j]
                if candidate < best:
                    best, best_j = candidate, j
            cost[i], step[i] = best, best_j
        path, i, gets = [], m, 0.0
        while True:
            pending = 1.0 - mass_by[0 if i == m else below[i]]
            if pending <= 1e-12:
                break
            gets += pending
            i = step[i]
            path.append(i)
        return path, gets

    low, high = 0.0, 1.0
    while plan(high)[1] <= gets_per_result and high < 1e6:
        high *= 4
    best_path, _ = plan(low)
    for _ in range(LAMBDA_STEPS):
        middle = (low + high) / 2
        path, gets = plan(middle)
        if gets <= gets_per_result:
            low, best_path = middle, path
        else:
            high = middle
    return tuple(grid[i] for i in best_path)


def _candidate_ages(
    times: Sequence[float], mass_by: Sequence[float], longest_wait: float
) -> list[float]:
    """Ages worth polling at: the distribution's quantiles, its maximum so every result is found,
    and (up to ``FILL_POINTS`` of them) ages filling gaps wider than ``longest_wait``."""
    picks = {times[-1]}
    for q in range(1, GRID_POINTS):
        index = bisect.bisect_left(mass_by, q / GRID_POINTS)  # first k with mass_by[k] >= q
        picks.add(times[max(0, min(len(times) - 1, index - 1))])
    grid = sorted(max(age, 1e-3) for age in picks)
    fill: list[float] = []
    for earlier, later in zip([0.0, *grid], grid, strict=False):
        steps = math.ceil((later - earlier) / longest_wait) - 1 if longest_wait < math.inf else 0
        fill += [earlier + k * (later - earlier) / (steps + 1) for k in range(1, steps + 1)]
    return sorted([*grid, *fill[:FILL_POINTS]])


def simulate(
    poll_plan: GeometricPolls | PlannedPolls, times: Sequence[float]
) -> tuple[float, float]:
    """Mean GETs per result and median fetch delay of ``poll_plan`` for these completion times
    (used by tests and by the benchmark to show the achievable frontier)."""
    gets, delays = 0, []
    for ready in times:
        age = 0.0
        while True:
            age = poll_plan.next_age(age)
            gets += 1
            if age >= ready:
                delays.append(age - ready)
                break
    delays.sort()
    return gets / len(times), delays[len(delays) // 2]


def lognormal_sample(median: float, sigma: float, n: int, seed: int = 7) -> list[float]:
    """``n`` completion times drawn from a log-normal distribution (for planning experiments)."""
    rng = random.Random(seed)
    return [rng.lognormvariate(0, sigma) * median for _ in range(n)]
