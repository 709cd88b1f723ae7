"""Price tables and the cost of token usage, in exact decimals.

A price table is a TOML (or YAML, same keys) file the user writes (see the README, "Cost and
usage")::

    currency = "USD"
    [models."gpt-4o-mini"]
    input = 0.15          # per million prompt tokens that were not cached
    cached_input = 0.075  # per million cached prompt tokens   (default: input)
    output = 0.60         # per million completion tokens that are not reasoning
    reasoning = 0.60      # per million reasoning tokens       (default: output)
    per_unit = 0.025      # per billed unit, e.g. one web search (no default)

Usage follows the OpenAI shape, where the details are parts of the totals, never extra:
``cached_tokens`` ⊂ ``prompt_tokens`` and ``reasoning_tokens`` ⊂ ``completion_tokens``. So a
prompt token is charged either as cached or as uncached input, and a completion token either as
reasoning or as output; nothing is counted twice. ``total_tokens`` is not charged.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatbatch.errors import ConfigError
from chatbatch.rules.model_names import most_specific

MILLION = Decimal(1_000_000)
NO_PRICE = "no price"
YAML_SUFFIXES = (".yaml", ".yml")
NO_UNIT_PRICE = "billed units but no per_unit price"


class ModelPrice(BaseModel):
    """What one model costs: per million tokens of each kind, and per billed unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    reasoning: Decimal | None = Field(default=None, ge=0)
    per_unit: Decimal | None = Field(default=None, ge=0)


class PriceTable(BaseModel):
    """Prices by model name. A name may be a glob pattern (``"gpt-4o*"``, ``"*"``): an exact name
    wins, then the longest matching pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=1)
    models: dict[str, ModelPrice] = Field(min_length=1)

    def price_for(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or None when the table does not cover it."""
        name = most_specific(model, self.models)
        return None if name is None else self.models[name]


@dataclass(frozen=True)
class Usage:
    """Summed token usage of some answers, OpenAI shape (see the module docstring)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    billed_units: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def total(usages: Iterable[Usage]) -> Usage:
        result = Usage()
        for usage in usages:
            result += usage
        return result


@dataclass(frozen=True)
class Cost:
    """The cost of some usage; ``amount`` is None when part of it has no price, and then
    ``missing`` says which models and why (never a silent zero). ``priced`` is the cost of the
    part that has a price: a lower bound when ``amount`` is unknown."""

    amount: Decimal | None
    missing: Mapping[str, str]
    priced: Decimal


def cost_of(usage: Usage, price: ModelPrice) -> Decimal | None:
    """The exact cost of ``usage`` at ``price``; None when billed units were used and the price
    has no ``per_unit``."""
    if usage.billed_units and price.per_unit is None:
        return None
    cached = usage.cached_tokens
    reasoning = usage.reasoning_tokens
    per_million = (
        (usage.prompt_tokens - cached) * price.input
        + cached * _or(price.cached_input, price.input)
        + (usage.completion_tokens - reasoning) * price.output
        + reasoning * _or(price.reasoning, price.output)
    )
    return per_million / MILLION + usage.billed_units * (price.per_unit or 0)


def cost_by_model(usage_by_model: Mapping[str, Usage], table: PriceTable) -> Cost:
    """The summed cost of each model's usage; unknown if any model with usage lacks a price."""
    amount = Decimal(0)
    missing: dict[str, str] = {}
    for model, usage in usage_by_model.items():
        price = table.price_for(model)
        cost = cost_of(usage, price) if price else None
        if cost is None:
            missing[model] = NO_PRICE if price is None else NO_UNIT_PRICE
        else:
            amount += cost
    return Cost(None if missing else amount, missing, amount)


def load_prices(path: Path) -> PriceTable:
    """Read and check a price table (TOML, or YAML for a .yaml/.yml file, same keys); a
    ConfigError names the file and each bad key."""
    try:
        with path.open("rb") as fh:
            if path.suffix.lower() in YAML_SUFFIXES:
                data = yaml.load(fh, Loader=_DecimalYamlLoader)  # a SafeLoader: no objects
            else:
                data = tomllib.load(fh, parse_float=Decimal)
    except OSError as exc:
        raise ConfigError(f"price table {path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"price table {path}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"price table {path}: not valid YAML: {exc}") from None
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"price table {path}: {validation_problems(exc)}") from None


class _DecimalYamlLoader(yaml.SafeLoader):
    """YAML's safe loader, reading floats as exact decimals (``0.15`` is 0.15)."""


def _yaml_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    return Decimal(loader.construct_scalar(node).replace("_", ""))


_DecimalYamlLoader.add_constructor("tag:yaml.org,2002:float", _yaml_decimal)


def format_money(amount: Decimal | None) -> str | None:
    """An amount as plain decimal text (never exponent notation), trailing zeros dropped."""
    if amount is None:
        return None
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def validation_problems(exc: ValidationError) -> str:
    """Each problem pydantic found in a TOML file, as ``key.path: what is wrong``."""
    problems = []
    for error in exc.errors():
        where = ".".join(_toml_key(part) for part in error["loc"]) or "the file"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def _toml_key(part: str | int) -> str:
    text = str(part)
    return text if text.replace("_", "").replace("-", "").isalnum() else f'"{text}"'


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value
