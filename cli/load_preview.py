"""What ``--dry-run`` prints instead of loading: the first requests as they would be sent, their
number, and the estimated prompt tokens and input cost (as text, or as one JSON object)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from chatbatch.untrusted import printable

if TYPE_CHECKING:
    from chatbatch.input.estimates import OutputEstimate
    from chatbatch.input.loading import BatchOptions, Preview
    from chatbatch.rules.pricing import Cost


def print_preview(
    file: Path,
    preview: Preview,
    options: BatchOptions,
    averages: dict[str, tuple[float, int]],
    *,
    as_json: bool,
) -> None:
    """The dry run's findings: the first requests, the count and the estimates (output from
    ``max_tokens``, or from the models' ``averages`` in earlier batches)."""
    from chatbatch.input.estimates import CHARS_PER_TOKEN
    from chatbatch.rules.pricing import format_money

    cost = preview.cost
    currency = options.prices.currency if options.prices else None
    output = output_estimates(preview, averages)
    output_tokens = _known_total(output)
    output_cost = _output_cost(output, options)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "dry_run": True,
                    "source": str(file),
                    "total": preview.total,
                    "estimated_prompt_tokens": preview.prompt_tokens,
                    "estimated_prompt_tokens_by_model": preview.tokens_by_model,
                    "estimated_input_cost": format_money(cost.amount) if cost else None,
                    "currency": currency,
                    "unpriced_models": dict(cost.missing) if cost else {},
                    "estimated_output_tokens": output_tokens,
                    "estimated_output_tokens_by_model": {m: e.tokens for m, e in output.items()},
                    "output_estimate_basis": {m: e.basis for m, e in output.items()},
                    "estimated_output_cost": _money(output_cost),
                    "requests": preview.requests,
                }
            )
        )
        return
    first_format = None
    for number, request in enumerate(preview.requests, 1):
        click.echo(
            f"# request {number} of {preview.total:,} (line {request['line']}, "
            f"custom_id {request['custom_id']!r})"
        )
        body = dict(request["body"])
        if number == 1:
            first_format = body.get("response_format")
        elif first_format is not None and body.get("response_format") == first_format:
            body["response_format"] = "(as in request 1)"  # the schema is shown once
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    click.echo(f"{preview.total:,} request(s) in {file}; nothing was loaded (--dry-run)")
    click.echo(
        f"estimated prompt tokens: {preview.prompt_tokens:,} (an estimate: characters of "
        f"message text / {CHARS_PER_TOKEN}; the provider's count will differ)"
    )
    if cost is None:
        click.echo("estimated input cost: no price table (--prices FILE or CHATBATCH_PRICES)")
    elif cost.amount is None:
        unpriced = ", ".join(f"{m} ({why})" for m, why in sorted(cost.missing.items()))
        click.echo(f"estimated input cost: unknown, the price table does not cover: {unpriced}")
    else:
        click.echo(
            f"estimated input cost: {format_money(cost.amount)} {currency} (those tokens at the "
            "input price)"
        )
    _print_output(output, output_tokens, output_cost, currency)


def output_estimates(
    preview: Preview, averages: dict[str, tuple[float, int]]
) -> dict[str, OutputEstimate]:
    """Each model's estimated output tokens and what the figure rests on."""
    from chatbatch.input.estimates import estimated_output

    return {
        model: estimated_output(tally, averages.get(model))
        for model, tally in sorted(preview.output_by_model.items())
    }


def _known_total(output: dict[str, OutputEstimate]) -> int | None:
    """The output tokens of every model, None when one is unknown."""
    if any(estimate.tokens is None for estimate in output.values()):
        return None
    return sum(estimate.tokens or 0 for estimate in output.values())


def _output_cost(output: dict[str, OutputEstimate], options: BatchOptions) -> Cost | None:
    """What the output would cost with the price table; None without one, or unknown tokens."""
    from chatbatch.input.estimates import estimated_output_cost

    if options.prices is None or _known_total(output) is None:
        return None
    tokens = {model: estimate.tokens or 0 for model, estimate in output.items()}
    return estimated_output_cost(tokens, options.prices)


def _money(cost: Cost | None) -> str | None:
    from chatbatch.rules.pricing import format_money

    return None if cost is None or cost.amount is None else format_money(cost.amount)


def _print_output(
    output: dict[str, OutputEstimate], tokens: int | None, cost: Cost | None, currency: str | None
) -> None:
    """The output estimate's lines: tokens with their basis per model, then the cost."""
    shown = "unknown" if tokens is None else f"{tokens:,}"
    click.echo(f"estimated output tokens: {shown}")
    for model, estimate in output.items():
        if estimate.tokens is None:
            click.echo(f"  {printable(model)}: unknown: {estimate.basis}")
        else:
            click.echo(f"  {printable(model)}: {estimate.tokens:,}, from {estimate.basis}")
    if cost is not None and cost.amount is not None:
        click.echo(f"estimated output cost: {_money(cost)} {currency}")
    elif cost is not None:
        click.echo("estimated output cost: unknown, the price table does not cover every model")
