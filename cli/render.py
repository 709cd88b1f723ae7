"""Human-readable renderings of batch summaries.

Text that may come from outside (the batch's name, a pause reason holding the provider's words,
model names) goes through ``printable`` once here, at the edge: a terminal must never receive
the provider's escape sequences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from chatbatch.rules.states import TERMINAL_STATUSES
from chatbatch.untrusted import printable

if TYPE_CHECKING:
    from chatbatch.reporting.quality import QualitySummary
    from chatbatch.reporting.summary import BatchSummary, CostSummary, Failure, SchemaSummary


def print_summary(summary: BatchSummary) -> None:
    """A few readable lines about one batch."""
    counts = summary["counts"]
    usage = summary["usage"]
    done = sum(counts[k] for k in TERMINAL_STATUSES)
    name = printable(summary["name"])
    click.echo(f"{name}  ({summary['id']})")
    click.echo(f"  status      {summary['status']}  —  {done}/{summary['total']} finished")
    if summary.get("pause_reason"):
        click.echo(f"  paused      {printable(summary['pause_reason'])}")
        click.echo("              fix the cause, then: chatbatch resume " + name)
    click.echo("  requests    " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if summary["priority"]:
        click.echo(f"  priority    {summary['priority']} (a share of 1 + {summary['priority']})")
    if summary["providers"]:
        sent = ", ".join(f"{printable(k)} {v}" for k, v in summary["providers"].items())
        click.echo("  providers   " + sent)
    click.echo(
        "  tokens      "
        f"prompt {usage['prompt_tokens']:,} · completion {usage['completion_tokens']:,} · "
        f"total {usage['total_tokens']:,} · reasoning {usage['reasoning_tokens']:,} · "
        f"cached {usage['cached_tokens']:,} · billed units {usage['billed_units']:,}"
    )
    for failure in summary.get("failures", []):
        click.echo("  failures    " + failure_text(failure))
    if summary.get("schema"):
        click.echo("  schema      " + schema_text(summary["schema"]))
    if "quality" in summary:
        click.echo("  gold        " + quality_text(summary["quality"]))
    if "cost" in summary:
        print_cost(summary["cost"])
    if summary["possible_duplicates"]:
        click.echo(
            f"  warning     {summary['possible_duplicates']} submission(s) may have been sent "
            "twice (the provider's answer was lost in flight)"
        )
    if summary.get("usage_clamped"):
        click.echo(
            f"  warning     {summary['usage_clamped']} answer(s) reported usage out of range "
            "(negative or absurd); stored clamped, so the totals may be off"
        )
    if summary["stalled_since"]:
        click.echo(
            f"  STALLED     work is due but nothing has progressed since "
            f"{summary['stalled_since']}: are workers running, is the provider answering?"
        )
    expiring = summary["expiring"]
    if expiring["count"]:
        click.echo(
            f"  DEADLINE    {expiring['count']} submitted request(s) must be fetched before "
            f"{expiring['earliest_deadline']} or their results are lost: are workers running?"
        )
    if summary["status"] == "cancelling":
        click.echo("  cancelling  fetching the results of requests already submitted")
    click.echo(f"  created     {summary['created_at']}")
    if summary["finished_at"]:
        click.echo(f"  finished    {summary['finished_at']}")
    if summary["archived_at"]:
        click.echo(f"  archived    {summary['archived_at']} (`chatbatch unarchive` to retry it)")


def failure_text(failure: Failure) -> str:
    """``bad_response × 3, e.g. r17: poll answer is not JSON`` (provider text made printable)."""
    text = f"{failure['code']} × {failure['count']}"
    example = failure["example"]
    if example and example["message"]:
        message = printable(example["message"]).replace("\n", " ")
        text += f", e.g. {printable(example['custom_id'])}: {message[:120]}"
    return text


def schema_text(schema: SchemaSummary) -> str:
    """``97.5% valid (39/40) · 3 asked again`` for a batch's ``schema`` summary."""
    judged = schema["valid"] + schema["invalid"]
    if schema["pass_rate"] is None:
        text = "no answers checked yet"
    else:
        text = f"{schema['pass_rate']:.1%} valid ({schema['valid']}/{judged})"
    if schema["retried"]:
        text += f" · {schema['retried']} asked again"
    return text


def quality_text(quality: QualitySummary) -> str:
    """``accuracy 61.2% (601/982 gold rows, 12 unanswered) · kappa 0.41 · field "label"``."""
    compared = f'field "{printable(quality["field"])}"' if quality["field"] else "the answer"
    if quality["accuracy"] is None:
        text = "no row with a gold label has finished yet"
    else:
        text = (
            f"accuracy {quality['accuracy']:.1%} ({quality['agreed']}/{quality['gold_rows']} "
            f"gold rows, {quality['unanswered']} unanswered)"
        )
    if quality["kappa"] is not None:
        text += f" · kappa {quality['kappa']:.2f}"
    return f'{text} · {compared} against column "{printable(quality["gold_column"])}"'


def print_cost(cost: CostSummary) -> None:
    """Cost so far and the projected total of a batch (``cost_summary``)."""
    currency = cost["currency"]
    if cost["so_far"] is None:
        click.echo("  cost        unknown: " + unpriced_text(cost["unpriced_models"]))
        return
    projected = cost["projected_total"]
    line = f"  cost        {cost['so_far']} {currency} so far"
    if projected not in (None, cost["so_far"]):
        line += f" · projected total {projected} {currency} (at the cost per request so far)"
    click.echo(line)


def unpriced_text(missing: dict[str, str]) -> str:
    """``model (reason), …`` for the models a price table does not cover (model names are
    outside text)."""
    return printable(", ".join(f"{model} ({reason})" for model, reason in sorted(missing.items())))
