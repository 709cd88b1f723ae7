"""``chatbatch simulate`` / ``python -m simulator``: serve the GeekAI simulator over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from simulator.config import LATENCY_FORMS, SimConfig, parse_latency

RATE = click.FloatRange(0, 1)
SECONDS = click.FloatRange(min=0)


def _latency(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Reject a bad latency spec at the command line rather than at the first request."""
    try:
        parse_latency(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _retry_after(_ctx: click.Context, _param: click.Parameter, value: str) -> float | None:
    """Seconds, or None for "none" (429s then carry no Retry-After header)."""
    if value.strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter("seconds, or 'none' for no header") from None
    if not seconds >= 0:
        raise click.BadParameter("seconds must be >= 0")
    return seconds


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8900, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--latency",
    default="0.05",
    show_default=True,
    callback=_latency,
    help=f"Time a task takes to complete: {LATENCY_FORMS}.",
)
@click.option(
    "--request-latency", type=SECONDS, default=0.0, help="Seconds added to every HTTP answer."
)
@click.option("--fail-rate", type=RATE, default=0.0, help="Fraction of tasks that end 'failed'.")
@click.option("--rate-429", type=RATE, default=0.0, help="Fraction of POSTs answered 429.")
@click.option(
    "--retry-after",
    default="1",
    show_default=True,
    callback=_retry_after,
    help="Retry-After seconds sent with injected 429s, or 'none' to send no header.",
)
@click.option("--rate-500", type=RATE, default=0.0, help="Fraction of requests answered 500.")
@click.option("--rate-503", type=RATE, default=0.0, help="Fraction of requests answered 503.")
@click.option(
    "--drop-rate", type=RATE, default=0.0, help="Fraction of requests closed with no answer."
)
@click.option(
    "--lost-response-rate",
    type=RATE,
    default=0.0,
    help="Fraction of POSTs accepted (task created) whose answer is then dropped.",
)
@click.option(
    "--slow-rate", type=RATE, default=0.0, help="Fraction of requests answered --slow-seconds late."
)
@click.option("--slow-seconds", type=SECONDS, default=30.0, show_default=True, help="How late.")
@click.option(
    "--not-found-seconds",
    type=SECONDS,
    default=0.0,
    help="A new task answers 404 to polls for this many seconds.",
)
@click.option(
    "--unknown-status-rate",
    type=RATE,
    default=0.0,
    help="Fraction of polls on unfinished tasks reporting an undocumented status.",
)
@click.option(
    "--blank-lines",
    type=click.IntRange(min=0),
    default=0,
    help="Blank lines padded before every JSON body, as GeekAI does under load.",
)
@click.option(
    "--nul-rate", type=RATE, default=0.0, help="Fraction of completions containing U+0000."
)
@click.option(
    "--invalid-json-rate",
    type=RATE,
    default=0.0,
    help="Fraction of JSON answers served broken (cut short, or a field of the wrong type).",
)
@click.option(
    "--rpm",
    type=click.IntRange(min=1),
    default=None,
    help="Accepted POSTs per minute per API key (sliding window); more get 429.",
)
@click.option(
    "--hostile",
    is_flag=True,
    help="Hostile provider mode: poison background requests whose last user message holds "
    "[[hostile:KIND]] with odd or hostile answers (kinds: see simulator/hostile.py).",
)
@click.option(
    "--hostile-rate",
    type=RATE,
    default=0.0,
    help="Fraction of background requests given a hostile KIND picked by their fingerprint "
    "and --seed (the same request always alike).",
)
@click.option(
    "--hostile-body-bytes",
    type=click.IntRange(min=0),
    default=40 * 1024 * 1024,
    show_default=True,
    help="Size of the huge hostile answers (post_huge, poll_huge).",
)
@click.option(
    "--retention",
    "retention_seconds",
    type=SECONDS,
    default=7 * 24 * 3600.0,
    show_default=True,
    help="Seconds a task's result is kept; later polls get 404.",
)
@click.option("--seed", type=int, default=None, help="Seed for faults and latencies.")
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the tasks in this SQLite file too (made if missing), so a simulator restarted "
    "or running beside this one with the same file answers them.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted API key (repeatable). [default: sk-simulator]",
)
@click.option("--no-auth", is_flag=True, help="Accept any key, or none.")
@click.option(
    "--payment-required-key",
    "payment_required_keys",
    multiple=True,
    help="Key answered 402 insufficient balance (repeatable).",
)
@click.option(
    "--forbidden-key",
    "forbidden_keys",
    multiple=True,
    help="Key answered 403 forbidden (repeatable).",
)
def simulate(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    no_auth: bool,
    store: Path | None,
    **settings: Any,
) -> None:
    """Serve a GeekAI-compatible API (background mode, polling, faults) on HOST:PORT."""
    from simulator.server import serve

    keys = () if no_auth else (api_keys or ("sk-simulator",))
    try:
        config = SimConfig(api_keys=keys, **settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        serve(config, host, port, store=store)
    except OSError as exc:  # typically: the port is taken
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    except ValueError as exc:  # the store is some other database
        raise click.ClickException(str(exc)) from None
