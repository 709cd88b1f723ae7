"""What ``--dry-run`` prints instead of loading: the first requests as they would be sent, their
number, and the estimated prompt tokens and input cost (as text, or as one JSON object)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

if TYPE_CHECKING:
    from chatbatch.input.loading import BatchOptions, Preview


def print_preview(file: Path, preview: Preview, options: BatchOptions, *, as_json: bool) -> None:
    """The dry run's findings: the first requests, the count and the estimates."""
    from chatbatch.input.estimates import CHARS_PER_TOKEN
    from chatbatch.rules.pricing import format_money

    cost = preview.cost
    currency = options.prices.currency if options.prices else None
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
            "input price; answers cost extra)"
        )
