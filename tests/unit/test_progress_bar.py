"""The live bar of `run` and `process` fits an 80-column terminal, however big the batch."""

from __future__ import annotations

from rich.console import Console

from cli.progress import counts_text, progress_bar

WORST_COUNTS = {
    "queued": 1,
    "submitting": 0,
    "submitted": 16,
    "succeeded": 990_000,
    "reused": 8_983,
    "failed": 600,
    "expired": 200,
    "cancelled": 200,
}


def test_the_bar_fits_80_columns_for_a_million_requests() -> None:
    console = Console(width=80, record=True, force_terminal=True, color_system=None)
    progress = progress_bar(console)
    task = progress.add_task("", total=1_000_000, counts="", cost="")
    progress.update(
        task, completed=999_983, counts=counts_text(WORST_COUNTS), cost="123456.123456 USD"
    )
    console.print(progress.get_renderable())
    lines = console.export_text().rstrip("\n").splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert "ok 998983 · failed 1000 · open 17" in lines[0]
