"""The arithmetic of --max-cost: what may still be sent, and what the pause says."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from chatbatch.operations.cost_caps import NO_LIMIT, CapState, allowance, pause_reason


def cap(max_cost: str, spent: str | None, per_request: str) -> CapState:
    return CapState(
        "batch_x",
        Decimal(max_cost),
        None if spent is None else Decimal(spent),
        Decimal(per_request),
        "USD",
        "no price for mystery-model" if spent is None else "",
    )


def test_allowance_counts_what_is_in_flight_as_spent() -> None:
    assert allowance(cap("1.00", "0.40", "0.10"), in_flight=0) == 6
    assert allowance(cap("1.00", "0.40", "0.10"), in_flight=2) == 4
    assert allowance(cap("1.00", "0.40", "0.10"), in_flight=6) == 0
    assert allowance(cap("1.00", "0.40", "0.10"), in_flight=9) == 0  # already past it
    assert allowance(cap("1.00", "0.99", "0.10"), in_flight=0) == 0  # not even one more fits


def test_free_requests_are_not_limited_and_unknown_spend_stops_everything() -> None:
    assert allowance(cap("1.00", "0", "0"), in_flight=50) == NO_LIMIT
    assert allowance(cap("1.00", None, "0.01"), in_flight=0) == 0


@given(
    st.decimals("0.01", "100", places=4),
    st.decimals("0", "100", places=4),
    st.decimals("0.0001", "1", places=4),
    st.integers(0, 1000),
)
def test_sending_the_allowance_never_passes_the_cap(max_cost, spent, per_request, flying) -> None:
    state = CapState("b", max_cost, spent, per_request, "USD")
    more = allowance(state, flying)
    assert more >= 0
    if more:
        assert spent + per_request * (flying + more) <= max_cost
        assert spent + per_request * (flying + more + 1) > max_cost


def test_pause_reasons_say_what_to_do() -> None:
    text = pause_reason(cap("2.50", "2.4", "0.05"), in_flight=2)
    assert text.startswith("cost limit 2.5 USD reached: spent 2.4, about 0.1 in flight")
    assert "resume --max-cost" in text
    unknown = pause_reason(cap("2.50", None, "0.05"), in_flight=0)
    assert "cannot be checked" in unknown and "mystery-model" in unknown
