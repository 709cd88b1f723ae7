"""``chatbatch compare A B``: two runs over the same rows side by side (``chatbatch.reporting.
compare``), as text or JSON, and the rows whose label changed as a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from cli.context import handles_errors, ready_database, setup_logging
from cli.exporting import check_output
from cli.files import atomic_file

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from chatbatch.reporting.compare import BatchComparison


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--field", help="The answer field compared (default: the one A is scored on "
              "against gold, else its schema's first text or enum property, else the whole "
              "answer).")  # fmt: skip
@click.option("--key", help="Join the rows on this source column instead of custom_id.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write the rows whose label changed "
    "to this CSV: the source columns, both labels, both raw answers, the gold label."
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@handles_errors
def compare_command(
    a: str, b: str, field: str | None, key: str | None, output: Path | None, as_json: bool
) -> None:
    """Compare batch A with batch B, run over the same rows (prompt v1 and v2, two models,
    yesterday and today): how often their labels agree, Cohen's kappa, a confusion table, the
    rows only in one, and each batch's answers, schema pass rate, accuracy against gold, cost
    and median latency."""
    from chatbatch.reporting import compare
    from chatbatch.store import reads

    setup_logging()
    if output is not None:
        check_output(output)
    with ready_database().connect() as conn:
        first, second = reads.resolve_batch(conn, a), reads.resolve_batch(conn, b)
        both = compare.compare_batches(
            conn, first, second, field=field, key=key, cost_of=lambda batch: cost_text(conn, batch)
        )
        if output is not None:
            _write_changes(conn, output, (first, second), both, key=key)
    if as_json:
        click.echo(orjson.dumps(both.report))
    else:
        _print(both.report, output)


def cost_text(conn: Connection, batch: Any) -> str | None:
    """What the batch cost so far, with its stored price table (None without one)."""
    from chatbatch.reporting.summary import cost_summary
    from cli.prices import prices_for_batch

    prices = prices_for_batch(batch)
    if prices is None:
        return None
    cost = cost_summary(conn, batch, prices=prices)
    return None if cost["so_far"] is None else f"{cost['so_far']} {cost['currency']}"


def _write_changes(
    conn: Connection,
    output: Path,
    batches: tuple[Any, Any],
    both: BatchComparison,
    *,
    key: str | None,
) -> None:
    """The changed rows as CSV: the join key, A's source columns, both labels and raw answers,
    and the gold label (A's, else B's) where there is one."""
    from chatbatch.reporting.compare import changed_rows
    from chatbatch.reporting.export.layout import csv_writer, value_cell

    sides, result, field = both.sides, both.result, both.report["field"]
    keys = set(result.changed)
    rows = [changed_rows(conn, batch, keys, key) for batch in batches]
    columns = orjson.loads(batches[0].record_columns or "[]")
    label = field or "answer"
    header = ["key", *columns, f"a_{label}", f"b_{label}", "a_answer", "b_answer", "gold"]
    with atomic_file(output, "w") as out:
        writer = csv_writer(out)
        writer.writerow([value_cell(name) for name in header])  # source names are untrusted
        for joined in result.changed:
            record, a_raw, _ = rows[0][joined]
            b_raw = rows[1][joined][1]
            gold = sides[0].golds.get(joined, sides[1].golds.get(joined))
            cells = [record.get(name) for name in columns]
            labels = (sides[0].labels[joined], sides[1].labels[joined])
            values = [joined, *cells, *labels, a_raw, b_raw, gold]
            writer.writerow([value_cell(value) for value in values])


def _print(report: dict[str, Any], output: Path | None) -> None:
    """The comparison in a few lines."""
    from chatbatch.untrusted import printable

    on = f'field "{printable(report["field"])}"' if report["field"] else "the whole answer"
    click.echo(
        f"{printable(report['a'])} (A) vs {printable(report['b'])} (B) on {on}: "
        f"{report['joined']} rows joined, {report['only_a']} only in A, "
        f"{report['only_b']} only in B"
    )
    if report["agreement"] is None:
        click.echo("  agreement   no joined row was answered by both")
    else:
        click.echo(
            f"  agreement   {report['agreement']:.1%} of {report['compared']} answered by both "
            f"· kappa {report['kappa']:.2f}"
        )
    written = f" (written to {output})" if output else " (-o FILE writes them)"
    click.echo(f"  changed     {report['changed']} row(s){written}")
    for line in _confusion_lines(report["confusion"]):
        click.echo("  " + line)
    for side in ("a_stats", "b_stats"):
        click.echo(f"  {side[0].upper()}           " + _stats_text(report[side]))


def _confusion_lines(confusion: dict[str, dict[str, int]]) -> list[str]:
    """A's labels down, B's across, as a small table (labels made printable)."""
    from chatbatch.untrusted import printable

    if not confusion:
        return []
    across = sorted({label for row in confusion.values() for label in row})
    width = max(8, *(len(printable(label)) for label in [*confusion, *across])) + 2
    lines = ["A \\ B".ljust(width) + "".join(printable(x).rjust(width) for x in across)]
    for label, row in confusion.items():
        counts = "".join(str(row.get(x, 0)).rjust(width) for x in across)
        lines.append(printable(label).ljust(width) + counts)
    return ["confusion   " + lines[0], *("            " + line for line in lines[1:])]


def _stats_text(stats: dict[str, Any]) -> str:
    """``drugs-v1: answered 295/300 · schema 98.3% valid · accuracy 31.0% (300 gold) · …``."""
    from chatbatch.untrusted import printable

    parts = [f"{printable(stats['batch'])}: answered {stats['answered']}/{stats['rows']}"]
    if stats["schema_pass_rate"] is not None:
        parts.append(f"schema {stats['schema_pass_rate']:.1%} valid")
    if stats["accuracy"] is not None:
        parts.append(f"accuracy {stats['accuracy']:.1%} ({stats['gold_rows']} gold)")
    if stats["cost"] is not None:
        parts.append(f"cost {stats['cost']}")
    if stats["median_latency_seconds"] is not None:
        parts.append(f"median latency {stats['median_latency_seconds']:.2f} s")
    return " · ".join(parts)
