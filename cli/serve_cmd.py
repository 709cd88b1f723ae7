"""``chatbatch serve``: the web dashboard (``web``) on one address, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import handles_errors, ready_database, settings, setup_logging
from cli.prices import price_table, prices_option
from cli.providers import providers_option

DEFAULT_PORT = 8800


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--read-only", is_flag=True, help="Hide the buttons and refuse every change (POST).")
@prices_option
@providers_option
@handles_errors
def serve_command(host: str, port: int, read_only: bool, prices_path: Path | None) -> None:
    """The web dashboard: every batch live, one batch's report, requests and workers, one
    request in full, and buttons to cancel, retry, resume and download. Listens on
    127.0.0.1 by default; any other address needs CHATBATCH_DASHBOARD_TOKEN (a bearer token,
    or typed into the login form)."""
    import uvicorn

    from web.app import Dashboard, create_app
    from web.security import MIN_TOKEN_CHARS, is_loopback

    config = settings()
    secret = config.dashboard_token
    token = secret.get_secret_value() if secret and secret.get_secret_value() else None
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"refusing to serve on {host} without a token: anyone who reaches it could read "
            "every prompt and cancel every batch. Set CHATBATCH_DASHBOARD_TOKEN, or serve on "
            "127.0.0.1 (the default) and reach it through an SSH tunnel"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise click.UsageError(
            f"CHATBATCH_DASHBOARD_TOKEN is too short to guard anything: use at least "
            f"{MIN_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 24`)"
        )
    setup_logging()
    dashboard = Dashboard(
        ready_database(), config, read_only=read_only, token=token, prices=price_table(prices_path)
    )
    mode = " (read-only)" if read_only else ""
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"chatbatch dashboard on http://{shown}:{port}/{mode}; Ctrl-C stops it", err=True)
    uvicorn.run(create_app(dashboard), host=host, port=port, log_level="warning")
