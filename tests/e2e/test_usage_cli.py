"""``chatbatch usage`` and ``status --prices`` through the installed binary, on the embedded
SQLite default after ``chatbatch run --simulate``."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from cli_process import BINARY, base_env, chatbatch, write_prompts

from simulator.answers import expected_usage

pytestmark = pytest.mark.skipif(
    BINARY is None and not os.environ.get("CI"), reason="chatbatch is not installed"
)

PRICES = """\
currency = "USD"
[models."gpt-4o-mini"]
input = 0.15
cached_input = 0.075
output = 0.60
per_unit = 0.025
"""


def cost_by_hand(bodies: list[dict]) -> Decimal:
    total = Decimal(0)
    for body in bodies:
        u = expected_usage(body)
        cached = u["prompt_tokens_details"]["cached_tokens"]
        total += (
            (u["prompt_tokens"] - cached) * Decimal("0.15")
            + cached * Decimal("0.075")
            + u["completion_tokens"] * Decimal("0.60")  # no reasoning tokens here
        ) / 1_000_000 + u["billed_units"] * Decimal("0.025")
    return total


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A directory holding a SQLite database with one finished batch, "nightly"."""
    where = tmp_path_factory.mktemp("usage")
    bodies = write_prompts(where / "prompts.jsonl", 9)
    chatbatch(
        "run", "prompts.jsonl", "-o", "out.jsonl", "--name", "nightly", "--simulate",
        env=base_env(where), cwd=where,
    )  # fmt: skip
    (where / "prices.toml").write_text(PRICES)
    return where, bodies


def test_usage_json_reports_exact_tokens_and_cost(finished_run) -> None:
    where, bodies = finished_run
    proc = chatbatch(
        "usage", "nightly", "--prices", "prices.toml", "--json", env=base_env(where), cwd=where
    )
    result = orjson.loads(proc.stdout)
    assert result["by"] == "model" and result["currency"] == "USD"
    assert [row["key"] for row in result["rows"]] == ["gpt-4o-mini"]
    total = result["total"]
    assert total["answers"] == 9
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "billed_units"):
        assert total[key] == sum(expected_usage(b)[key] for b in bodies), key
    assert total["cached_tokens"] == sum(
        expected_usage(b)["prompt_tokens_details"]["cached_tokens"] for b in bodies
    )
    assert total["cached_tokens"] > 0 and total["billed_units"] == 3
    assert Decimal(total["cost"]) == cost_by_hand(bodies)
    assert result["unpriced_models"] == {}
    assert proc.stderr == ""

    by_day = orjson.loads(
        chatbatch("usage", "--by", "day", "--json", env=base_env(where), cwd=where).stdout
    )
    assert len(by_day["rows"]) == 1 and by_day["rows"][0]["answers"] == 9
    assert by_day["total"]["cost"] is None and by_day["currency"] is None  # no price table


def test_usage_text_and_status_cost_use_the_prices_setting(finished_run) -> None:
    where, bodies = finished_run
    env = base_env(where) | {"CHATBATCH_PRICES": str(where / "prices.toml")}
    text = chatbatch("usage", env=env, cwd=where).stdout
    assert "cost (USD)" in text and "nightly" in text
    expected = f"{cost_by_hand(bodies).normalize():f}"
    assert expected in text

    status = orjson.loads(chatbatch("status", "nightly", "--json", env=env, cwd=where).stdout)
    assert status["cost"]["so_far"] == expected == status["cost"]["projected_total"]
    plain = chatbatch("status", "nightly", env=env, cwd=where).stdout
    assert f"cost        {expected} USD so far" in plain
    without = orjson.loads(
        chatbatch("status", "nightly", "--json", env=base_env(where), cwd=where).stdout
    )
    assert "cost" not in without


def test_an_unpriced_model_is_reported_unknown_with_a_warning(finished_run) -> None:
    where, _ = finished_run
    (where / "other.toml").write_text('[models."gpt-4o"]\ninput = 2.5\noutput = 10\n')
    proc = chatbatch(
        "usage", "nightly", "--prices", "other.toml", "--json", env=base_env(where), cwd=where
    )
    result = orjson.loads(proc.stdout)
    assert result["total"]["cost"] is None and result["rows"][0]["cost"] is None
    assert result["unpriced_models"] == {"gpt-4o-mini": "no price"}
    assert "warning: cost unknown" in proc.stderr and "gpt-4o-mini (no price)" in proc.stderr
    text = chatbatch("usage", "nightly", "--prices", "other.toml", env=base_env(where), cwd=where)
    assert "unknown" in text.stdout


@pytest.mark.parametrize("command", [("usage", "nightly"), ("status", "nightly")])
def test_a_bad_price_file_exits_2_naming_the_file_and_key(finished_run, command) -> None:
    where, _ = finished_run
    bad = where / "bad-prices.toml"
    bad.write_text('[models."gpt-4o-mini"]\ninput = 0.15\noutput = -1\n')
    proc = chatbatch(*command, "--prices", str(bad), env=base_env(where), cwd=where, check=False)
    assert proc.returncode == 2
    assert f"price table {bad}: models.gpt-4o-mini.output" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    missing = chatbatch(
        *command, "--prices", "nope.toml", env=base_env(where), cwd=where, check=False
    )
    assert missing.returncode == 2 and "price table nope.toml: cannot read it" in missing.stderr
