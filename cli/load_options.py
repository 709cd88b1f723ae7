"""The load options ``chatbatch load`` and ``chatbatch run`` share, and what they build before
anything is loaded: the source (JSONL request lines, or CSV / JSONL records through a prompt
template) and the batch options (schema, price table, cost cap, reuse), every option checked
first so that a usage error touches no database."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
import orjson

from chatbatch.rules.fair_share import MAX_PRIORITY
from cli.context import settings
from cli.notify import validate_url
from cli.prices import price_table, prices_option
from cli.providers import providers_option

if TYPE_CHECKING:
    from chatbatch.input.loading import BatchOptions
    from chatbatch.input.sources import Source
    from chatbatch.providers import ProviderTable

F = TypeVar("F", bound=Callable[..., Any])
CSV_SUFFIXES = (".csv",)


class _Amount(click.ParamType):
    """A positive decimal amount of money, kept exact."""

    name = "amount"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``value`` as an exact Decimal; a usage error unless it is a positive number."""
        if isinstance(value, Decimal):
            return value
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not amount.is_finite() or amount <= 0:
            self.fail(f"{value!r} must be a positive amount", param, ctx)
        return amount


@dataclass(frozen=True)
class LoadArgs:
    """The load options as given on the command line."""

    name: str | None = None
    model: str | None = None
    template: str | None = None
    system: str | None = None
    id_column: str | None = None
    params: tuple[str, ...] = ()
    schema_path: Path | None = None
    schema_mode: str | None = None
    retry_invalid: int | None = None
    prices_path: Path | None = None
    max_cost: Decimal | None = None
    reuse: bool = False
    priority: int = 0
    notify: str | None = None
    gold_column: str | None = None
    gold_field: str | None = None
    gold_case_sensitive: bool = False
    dry_run: bool = False


_OPTIONS = (
    click.option("--name", help="A unique name for the batch (default: file name + short id)."),
    click.option(
        "--model",
        help="Model for requests that do not name one (required with --template).",
    ),
    click.option(
        "--template",
        metavar="TEXT|@FILE",
        help="Jinja2 template of the user message, rendered with each row's columns "
        "({{ text }}; {{ row['a b'] }} for any name). With it, a .csv file's rows or a JSONL "
        "file's records (objects of fields) become requests.",
    ),
    click.option(
        "--system",
        metavar="TEXT|@FILE",
        help="System message put before the user message (a template too); needs --template.",
    ),
    click.option(
        "--id-column",
        metavar="COLUMN",
        help="Take each request's custom_id from this column (unique, non-empty) instead of "
        "the row number; needs --template.",
    ),
    click.option(
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="A request parameter for every templated request, e.g. --param temperature=0 "
        "--param max_tokens=50 (VALUE is read as JSON, else taken as text); repeatable.",
    ),
    click.option(
        "--schema",
        "schema_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="JSON Schema file every answer must follow: sets the provider's JSON output.",
    ),
    click.option(
        "--schema-mode",
        type=click.Choice(["json_schema", "json_mode"]),
        help="How --schema reaches the model: response_format json_schema (default) or "
        "json_mode, for models that only promise some JSON object.",
    ),
    click.option(
        "--retry-invalid",
        type=click.IntRange(min=0),
        metavar="N",
        help="Ask again up to N times when an answer does not follow --schema (default 0).",
    ),
    prices_option,
    providers_option,
    click.option(
        "--max-cost",
        type=_Amount(),
        metavar="AMOUNT",
        help="Stop submitting before the cost (spent plus in flight) would pass AMOUNT, in the "
        "price table's currency; needs a price table.",
    ),
    click.option(
        "--reuse",
        is_flag=True,
        help="Answer requests identical to ones that already succeeded in earlier batches from "
        "those answers, instead of paying again.",
    ),
    click.option(
        "--priority",
        type=click.IntRange(0, MAX_PRIORITY),
        default=0,
        show_default=True,
        metavar="N",
        help="Share of the provider while other batches run too: running batches split each "
        f"model's rate in proportion to 1 + N (0 to {MAX_PRIORITY}); none is ever starved.",
    ),
    click.option(
        "--notify",
        metavar="URL",
        callback=validate_url,
        help="POST the batch's events here (finished, paused, results about to expire), for "
        "cron jobs and chat hooks: kept with the batch, so whichever worker sees one sends it.",
    ),
    click.option(
        "--gold-column",
        metavar="COLUMN",
        help="The column holding each row's trusted label: status, compare and the CSV export "
        "then score the answers against it (accuracy, kappa, per-class figures); needs "
        "--template.",
    ),
    click.option(
        "--gold-field",
        metavar="FIELD",
        help="The answer field compared with --gold-column (default: the schema's first text "
        "or enum property; without a schema, the whole answer).",
    ),
    click.option(
        "--gold-case-sensitive",
        is_flag=True,
        help="Letter case counts when comparing with --gold-column (it does not by default).",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Check the file and show the first requests, their number and the estimated "
        "prompt tokens and input cost; load nothing.",
    ),
)
_PARAMS = tuple(LoadArgs.__dataclass_fields__)


def load_options(fn: F) -> F:
    """Add the load options to a command; ``fn`` receives them as one ``load`` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        load = LoadArgs(**{name: kwargs.pop(name) for name in _PARAMS})
        return fn(*args, load=load, **kwargs)

    command: Any = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return cast(F, command)


def build_source(file: Path, load: LoadArgs) -> Source:
    """The file as requests: JSONL request lines, or records through the template."""
    from chatbatch.input.jsonl_input import RequestLines, control_problem
    from chatbatch.input.records import CsvRecords, JsonlRecords, RecordRequests
    from chatbatch.input.templating import prompt_template
    from chatbatch.untrusted import has_controls

    if load.model is not None and has_controls(load.model):
        # It fills in every request's model, stored in a text column and printed as one line.
        raise click.BadParameter(control_problem(load.model), param_hint="--model")
    max_line_bytes = settings().max_line_bytes
    is_csv = file.suffix.lower() in CSV_SUFFIXES
    if load.template is None:
        if is_csv:
            raise click.UsageError(
                "a CSV file needs --template to turn its rows into requests, e.g. "
                "--template 'Classify: {{ text }}' --model MODEL"
            )
        for flag, value in (
            ("--system", load.system),
            ("--id-column", load.id_column),
            ("--param", load.params or None),
            ("--gold-column", load.gold_column),
        ):
            if value is not None:
                raise click.UsageError(f"{flag} needs --template")
        return RequestLines(file, default_model=load.model, max_line_bytes=max_line_bytes)
    if not load.model:
        raise click.UsageError("--template needs --model: the model every request is sent to")
    template = prompt_template(load.template, system=load.system)
    records: CsvRecords | JsonlRecords
    if is_csv:
        records = CsvRecords(file, max_line_bytes=max_line_bytes, id_column=load.id_column)
    else:
        records = JsonlRecords(file, max_line_bytes=max_line_bytes)
    return RecordRequests(
        records,
        template,
        model=load.model,
        id_column=load.id_column,
        params=request_params(load.params),
    )


def request_params(given: tuple[str, ...]) -> dict[str, Any]:
    """``--param KEY=VALUE`` options as body fields, checked like any request's fields."""
    from chatbatch.input.schemas import body_problems

    params: dict[str, Any] = {}
    for item in given:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        if key in ("model", "messages", "stream", "background"):
            raise click.BadParameter(f"{key!r} is set by chatbatch", param_hint="--param")
        try:
            params[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            params[key] = text
    problems = body_problems({"messages": [{"role": "user", "content": "x"}], **params})
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="--param")
    return params


def batch_options(load: LoadArgs) -> BatchOptions:
    """Schema, price table, cost cap and reuse, read and checked before anything is loaded."""
    from chatbatch.input.loading import BatchOptions
    from chatbatch.rules import structured

    schema = None
    if load.schema_path is not None:
        schema = structured.load_schema(load.schema_path)
    else:
        for flag, value in (
            ("--schema-mode", load.schema_mode),
            ("--retry-invalid", load.retry_invalid),
        ):
            if value is not None:
                raise click.UsageError(f"{flag} needs --schema")
    prices = price_table(load.prices_path)
    if load.max_cost is not None and prices is None:
        raise click.UsageError(
            "--max-cost needs a price table to measure cost: --prices FILE or CHATBATCH_PRICES"
        )
    if load.max_cost is not None and prices and load.model and not prices.price_for(load.model):
        raise click.UsageError(
            f"--max-cost: the price table has no price for {load.model!r}, so the cost "
            "cannot be measured"
        )
    gold_field = gold_answer_field(load, schema)
    return BatchOptions(
        gold_column=load.gold_column,
        gold_field=gold_field,
        gold_case_sensitive=load.gold_case_sensitive,
        schema=schema,
        schema_mode=load.schema_mode or "json_schema",
        schema_name=load.schema_path.stem if load.schema_path else "answer",
        retry_invalid=load.retry_invalid or 0,
        prices=prices,
        max_cost=load.max_cost,
        reuse=load.reuse,
        priority=load.priority,
        notify_url=load.notify,
        providers=providers_file_table(),
    )


def gold_answer_field(load: LoadArgs, schema: dict[str, Any] | None) -> str | None:
    """The answer field compared with ``--gold-column``: ``--gold-field``, else the schema's
    first text or enum property, else None (the whole answer). A usage error for a field the
    schema does not have, or gold options without ``--gold-column``."""
    from chatbatch.rules.structured import first_label_property

    if load.gold_column is None:
        if load.gold_field is not None:
            raise click.UsageError("--gold-field needs --gold-column")
        if load.gold_case_sensitive:
            raise click.UsageError("--gold-case-sensitive needs --gold-column")
        return None
    properties = (schema or {}).get("properties")
    if load.gold_field is None:
        return first_label_property(schema) if schema else None
    if isinstance(properties, dict) and load.gold_field not in properties:
        raise click.BadParameter(
            f"{load.gold_field!r} is not a property of the schema "
            f"(properties: {', '.join(map(str, properties)) or 'none'})",
            param_hint="--gold-field",
        )
    return load.gold_field


def providers_file_table() -> ProviderTable | None:
    """The providers file's table (``CHATBATCH_PROVIDERS``), so a load refuses models no
    provider serves; None without a file (the one provider serves every model)."""
    from chatbatch.providers import provider_table

    config = settings()
    return provider_table(config) if config.providers is not None else None
