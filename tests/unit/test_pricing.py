"""Price tables: parsing and checking the TOML file, exact cost maths, models without a price."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from chatbatch.errors import ConfigError
from chatbatch.rules.pricing import (
    NO_PRICE,
    NO_UNIT_PRICE,
    ModelPrice,
    PriceTable,
    Usage,
    cost_by_model,
    cost_of,
    format_money,
    load_prices,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prices.toml"

GOOD = """
currency = "EUR"
[models."gpt-4o-mini"]
input = 0.15
cached_input = 0.075
output = 0.60
reasoning = 2.4
per_unit = 0.025

[models."deepseek-*"]
input = 1
output = 2

[models."deepseek-r1*"]
input = 3
output = 4

[models."*"]
input = 10
output = 20
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_a_good_table_parses_floats_as_exact_decimals(tmp_path: Path) -> None:
    table = load_prices(write(tmp_path, GOOD))
    assert table.currency == "EUR"
    price = table.models["gpt-4o-mini"]
    # 0.15 as a binary float is 0.1499999999999999944…; the table must hold the decimal itself.
    assert price.input == Decimal("0.15") and price.input.as_tuple().exponent == -2
    assert price.cached_input == Decimal("0.075")
    assert price.per_unit == Decimal("0.025")


def test_a_yaml_table_reads_the_same_keys_as_exact_decimals(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "currency: EUR\nmodels:\n  gpt-4o-mini:\n    input: 0.15\n    output: 0.6\n"
        "    per_unit: 0.025\n  'deepseek-*':\n    input: 1\n    output: 2.19\n"
    )
    table = load_prices(path)
    assert table.currency == "EUR"
    assert table.models["gpt-4o-mini"].input == Decimal("0.15")
    assert table.models["gpt-4o-mini"].per_unit == Decimal("0.025")
    assert table.price_for("deepseek-r1") == table.models["deepseek-*"]
    path.write_text("models:\n  m: {input: 1, output: -2}\n")
    with pytest.raises(ConfigError, match=r"models\.m\.output: Input should be greater than"):
        load_prices(path)
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_prices(path)


def test_the_example_table_in_the_repository_is_valid() -> None:
    table = load_prices(EXAMPLE)
    assert table.price_for("gpt-4o-mini") is not None
    assert table.price_for("deepseek-r1") is not None


def test_currency_defaults_to_usd_and_optional_prices_default_to_none(tmp_path: Path) -> None:
    table = load_prices(write(tmp_path, "[models.m]\ninput = 1\noutput = 2\n"))
    assert table.currency == "USD"
    price = table.models["m"]
    assert (price.cached_input, price.reasoning, price.per_unit) == (None, None, None)


def test_exact_name_wins_then_the_longest_matching_pattern(tmp_path: Path) -> None:
    table = load_prices(write(tmp_path, GOOD))
    assert table.price_for("gpt-4o-mini") == table.models["gpt-4o-mini"]
    assert table.price_for("deepseek-r1-0528") == table.models["deepseek-r1*"]
    assert table.price_for("deepseek-v3") == table.models["deepseek-*"]
    assert table.price_for("anything") == table.models["*"]
    no_fallback = PriceTable(models={"gpt-4o-mini": ModelPrice(input=1, output=1)})
    assert no_fallback.price_for("gpt-4o") is None
    assert no_fallback.price_for("GPT-4O-MINI") is None  # names are case-sensitive


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("currency = \n", "not valid TOML"),
        ('currency = "USD"\n', "models: Field required"),
        ("[models]\n", "models: Dictionary should have at least 1 item"),
        ('[models."gpt-4o-mini"]\ninput = 1\n', "models.gpt-4o-mini.output: Field required"),
        ("[models.m]\ninput = -0.1\noutput = 1\n", "models.m.input: Input should be greater"),
        ('[models.m]\ninput = "cheap"\noutput = 1\n', "models.m.input: Input should be a valid"),
        ("[models.m]\ninput = inf\noutput = 1\n", "models.m.input: Input should be a finite"),
        ("[models.m]\ninput = 1\noutput = 1\ncached = 1\n", "models.m.cached: Extra inputs"),
        ('[models."gpt-4.1"]\ninput = 1\noutput = true\n', 'models."gpt-4.1".output'),
        ("colour = 1\n[models.m]\ninput = 1\noutput = 1\n", "colour: Extra inputs"),
    ],
)
def test_a_bad_table_is_refused_naming_the_file_and_key(
    tmp_path: Path, text: str, says: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_prices(path)
    assert str(raised.value).startswith(f"price table {path}: ")
    assert says in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"price table .*nope\.toml: cannot read it"):
        load_prices(tmp_path / "nope.toml")


PRICE = ModelPrice(
    input=Decimal("0.15"),
    cached_input=Decimal("0.075"),
    output=Decimal("0.60"),
    reasoning=Decimal("2.40"),
    per_unit=Decimal("0.025"),
)


def test_cached_and_reasoning_tokens_are_parts_of_the_totals_charged_once() -> None:
    usage = Usage(
        prompt_tokens=1000,
        cached_tokens=400,  # of the 1000 prompt tokens
        completion_tokens=300,
        reasoning_tokens=100,  # of the 300 completion tokens
        total_tokens=1300,
        billed_units=2,
    )
    expected = (
        600 * Decimal("0.15")  # uncached prompt
        + 400 * Decimal("0.075")  # cached prompt
        + 200 * Decimal("0.60")  # visible output
        + 100 * Decimal("2.40")  # reasoning
    ) / 1_000_000 + 2 * Decimal("0.025")
    # 90 + 30 + 120 + 240 = 480 per million → 0.00048, plus 0.05 for the two units
    assert cost_of(usage, PRICE) == expected == Decimal("0.05048")


def test_costs_are_exact_where_floats_drift() -> None:
    price = ModelPrice(input=Decimal("0.1"), output=Decimal("0.2"))
    usage = Usage(prompt_tokens=3, completion_tokens=0)
    assert cost_of(usage, price) == Decimal("0.0000003")
    assert 3 * 0.1 / 1_000_000 != 0.0000003  # what float maths would have said
    ten = Usage.total([usage] * 10)
    assert cost_of(ten, price) == Decimal("0.000003")


def test_default_cached_and_reasoning_prices_are_input_and_output() -> None:
    price = ModelPrice(input=Decimal(2), output=Decimal(8))
    usage = Usage(prompt_tokens=10, cached_tokens=4, completion_tokens=6, reasoning_tokens=5)
    assert cost_of(usage, price) == Decimal(10 * 2 + 6 * 8) / 1_000_000


def test_billed_units_without_a_unit_price_make_the_cost_unknown_not_zero() -> None:
    price = ModelPrice(input=Decimal(1), output=Decimal(1))
    assert cost_of(Usage(prompt_tokens=1, billed_units=1), price) is None
    assert cost_of(Usage(prompt_tokens=1), price) == Decimal("0.000001")
    free = ModelPrice(input=Decimal(1), output=Decimal(1), per_unit=Decimal(0))
    assert cost_of(Usage(prompt_tokens=1, billed_units=3), free) == Decimal("0.000001")


def test_a_model_without_a_price_makes_the_sum_unknown_and_is_named() -> None:
    table = PriceTable(
        models={
            "gpt-4o-mini": PRICE,
            "search-no-unit": ModelPrice(input=Decimal(1), output=Decimal(1)),
        }
    )
    priced = {"gpt-4o-mini": Usage(prompt_tokens=1_000_000)}
    assert cost_by_model(priced, table).amount == Decimal("0.15")
    cost = cost_by_model(
        {
            **priced,
            "mystery": Usage(prompt_tokens=5),
            "search-no-unit": Usage(prompt_tokens=5, billed_units=1),
        },
        table,
    )
    assert cost.amount is None
    assert cost.missing == {"mystery": NO_PRICE, "search-no-unit": NO_UNIT_PRICE}
    assert cost.priced == Decimal("0.15")  # a lower bound, reported as such


def test_no_usage_costs_exactly_zero_and_money_prints_without_exponents() -> None:
    assert cost_by_model({}, PriceTable(models={"m": PRICE})).amount == Decimal(0)
    assert format_money(Decimal("0.0000003")) == "0.0000003"
    assert format_money(Decimal("1.50000")) == "1.5"
    assert format_money(Decimal("0E-8")) == "0"
    assert format_money(Decimal(12)) == "12"
    assert format_money(None) is None
