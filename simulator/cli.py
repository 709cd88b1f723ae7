"""``chatbatch simulate`` / ``python -m simulator``: serve the GeekAI simulator."""

from __future__ import annotations

import click

from simulator.config import SimConfig, parse_latency


def _latency(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        parse_latency(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _retry_after(_ctx: click.Context, _param: click.Parameter, value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter("seconds, or 'none' for no header") from None


RATE = click.FloatRange(0, 1)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=int, help="0 picks a free port.")
@click.option(
    "--latency",
    default="0.05",
    show_default=True,
    callback=_latency,
    help="Task completion time: SECONDS, uniform:A,B, exp:MEAN or lognormal:MEDIAN,SIGMA.",
)
@click.option("--request-latency", default=0.0, help="Seconds added to every HTTP answer.")
@click.option("--fail-rate", type=RATE, default=0.0, help="Tasks that end 'failed'.")
@click.option("--rate-429", type=RATE, default=0.0, help="POSTs answered 429.")
@click.option(
    "--retry-after", default="1", callback=_retry_after, help="Retry-After seconds, or 'none'."
)
@click.option("--rate-500", type=RATE, default=0.0, help="Requests answered 500.")
@click.option("--rate-503", type=RATE, default=0.0, help="Requests answered 503.")
@click.option("--drop-rate", type=RATE, default=0.0, help="Connections closed with no answer.")
@click.option(
    "--lost-response-rate",
    type=RATE,
    default=0.0,
    help="POSTs accepted but whose answer is dropped.",
)
@click.option("--slow-rate", type=RATE, default=0.0, help="Requests that answer slowly.")
@click.option("--slow-seconds", default=30.0, help="How slowly.")
@click.option("--not-found-seconds", default=0.0, help="New task ids answer 404 this long.")
@click.option("--unknown-status-rate", type=RATE, default=0.0, help="Polls with an odd status.")
@click.option("--blank-lines", default=0, help="Leading blank lines before every JSON body.")
@click.option("--nul-rate", type=RATE, default=0.0, help="Completions containing U+0000.")
@click.option("--rpm", type=int, default=None, help="Accepted requests per minute per key.")
@click.option("--retention", default=7 * 24 * 3600.0, help="Seconds a result is kept.")
@click.option("--seed", type=int, default=None, help="Seed for faults and latencies.")
@click.option("--api-key", "api_keys", multiple=True, help="Accepted key (repeatable).")
@click.option("--no-auth", is_flag=True, help="Accept any key.")
@click.option("--payment-required-key", "payment_keys", multiple=True, help="Keys answered 402.")
def simulate(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    no_auth: bool,
    payment_keys: tuple[str, ...],
    retention: float,
    **faults: object,
) -> None:
    """Serve a GeekAI-compatible API (background mode, polling, faults) on HOST:PORT."""
    from simulator.server import serve

    keys: tuple[str, ...] = () if no_auth else (api_keys or ("sk-sim",))
    config = SimConfig(
        api_keys=keys,
        payment_required_keys=payment_keys,
        retention_seconds=retention,
        **faults,  # type: ignore[arg-type]
    )
    serve(config, host, port)
