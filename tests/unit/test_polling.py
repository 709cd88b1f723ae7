"""Poll schedules: the geometric fallback, the planner's GET budget, and learning per model."""

from __future__ import annotations

import pytest

from chatbatch.rules.polling import (
    GeometricPolls,
    PlannedPolls,
    PollPlanner,
    completion_distribution,
    lognormal_sample,
    plan_poll_ages,
    simulate,
)

FALLBACK = GeometricPolls(first=1.0, factor=1.5, longest_wait=60.0)


def test_geometric_ages_grow_by_the_factor_then_by_the_longest_wait() -> None:
    ages, age = [], 0.0
    for _ in range(4):
        age = FALLBACK.next_age(age)
        ages.append(age)
    assert ages == [1.0, 2.5, 4.75, 8.125]
    capped = GeometricPolls(first=10, factor=3, longest_wait=20)
    assert [capped.next_age(a) for a in (0, 10, 30, 50, 1000)] == [10, 30, 50, 70, 1010]
    assert GeometricPolls(first=0, factor=2, longest_wait=5).next_age(7.5) == 7.5  # poll now


@pytest.mark.parametrize("sigma", [0.5, 1.0])
@pytest.mark.parametrize("budget", [1.5, 2.0, 3.0])
def test_a_plan_spends_no_more_gets_than_its_budget(sigma: float, budget: float) -> None:
    sample = lognormal_sample(median=5, sigma=sigma, n=800, seed=3)
    plan = PlannedPolls(plan_poll_ages(sample, budget), FALLBACK)
    gets, _ = simulate(plan, sample)
    assert gets <= budget + 1e-9
    assert gets >= budget - 0.35  # and it uses the budget it has


def test_a_bigger_budget_buys_a_shorter_delay() -> None:
    sample = lognormal_sample(median=5, sigma=0.5, n=800, seed=4)
    held_out = lognormal_sample(median=5, sigma=0.5, n=3000, seed=5)
    delays = [
        simulate(PlannedPolls(plan_poll_ages(sample, budget), FALLBACK), held_out)[1]
        for budget in (1.5, 2.0, 3.0)
    ]
    assert delays[0] > delays[1] > delays[2]


def test_a_plan_beats_the_fixed_schedule_at_the_same_gets() -> None:
    """Against a schedule that knows nothing of a 20 s median, the plan fetches sooner with
    fewer GETs."""
    sample = lognormal_sample(median=20, sigma=0.5, n=800, seed=6)
    held_out = lognormal_sample(median=20, sigma=0.5, n=3000, seed=7)
    fixed_gets, fixed_delay = simulate(FALLBACK, held_out)
    plan = PlannedPolls(plan_poll_ages(sample, 2.0), FALLBACK)
    planned_gets, planned_delay = simulate(plan, held_out)
    assert planned_gets < fixed_gets / 2
    assert planned_delay < fixed_delay * 1.5


def test_pending_requests_keep_a_batch_in_progress_from_looking_fast() -> None:
    """Half the requests finished within 2 s and the other half are still pending at 10 s: the
    estimate keeps half its mass beyond 10 s, where a plain sample of completions has none."""
    finished = [(t / 100, t / 100 + 0.01) for t in range(1, 200, 2)]
    pending: list[tuple[float, float | None]] = [(10.0, None)] * 100
    times, masses = completion_distribution([*finished, *pending])
    assert sum(masses) == pytest.approx(1.0)
    assert sum(m for t, m in zip(times, masses, strict=True) if t > 10) == pytest.approx(0.5)


def test_the_planner_keeps_each_model_on_the_fallback_until_it_has_seen_enough() -> None:
    planner = PollPlanner(FALLBACK, 2.0, warm_up=50)
    times = lognormal_sample(median=30, sigma=0.3, n=49, seed=8)
    assert not planner.replan("slow-model", [(t * 0.9, t) for t in times])
    assert planner.schedule("slow-model") is FALLBACK
    assert planner.replan("slow-model", [(t * 0.9, t) for t in [*times, 30.0]])
    planned = planner.schedule("slow-model")
    assert isinstance(planned, PlannedPolls) and planned.next_age(0) > 10
    assert planner.schedule("another-model") is FALLBACK


def test_no_budget_means_the_fixed_schedule_forever() -> None:
    planner = PollPlanner(FALLBACK, None, warm_up=1)
    assert not planner.replan("m", [(t, t + 1.0) for t in range(100)])
    assert planner.schedule("m") is FALLBACK


def test_planned_polls_are_never_further_apart_than_the_longest_wait() -> None:
    """A heavy tail must not let the last polls drift out, or the batch's slowest results
    (and so the whole batch) would finish much later than they are ready."""
    sample = lognormal_sample(median=5, sigma=1.5, n=2000, seed=9)
    ages = plan_poll_ages(sample, 1.5, longest_wait=20.0)
    gaps = [later - earlier for earlier, later in zip((0.0, *ages), ages, strict=False)]
    assert max(gaps) <= 20.0
    assert (
        max(
            b - a
            for a, b in zip(
                (0.0, *plan_poll_ages(sample, 1.5)), plan_poll_ages(sample, 1.5), strict=False
            )
        )
        > 20.0
    )
