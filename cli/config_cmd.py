"""``chatbatch config`` (alias ``info``): which database, broker and provider a command here
would use, and every setting with where its value came from; secrets are never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from chatbatch.redaction import MIN_KEY_CHARS, Redactor
from chatbatch.settings import (
    Settings,
    data_dir,
    env_file_used,
    setting_origins,
    variable_names,
)
from chatbatch.store.db import masked_url
from cli.context import handles_errors, notice_stale_local_database, settings

KEY_EDGES_FROM = 20  # a key at least this long may show its first and last characters
KEY_EDGE = 3  # how many characters at each end; the rest of the key stays unknowable
NOT_SET = "not set"


@click.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@handles_errors
def config_command(as_json: bool) -> None:
    """Show the settings in force here (alias: info): the database (password hidden) and
    whether it is the embedded one, the data directory, the broker, the queue, the provider,
    whether an API key is set (never the key), the .env file read, and every setting with
    where its value came from (default, environment or .env)."""
    notice_stale_local_database()
    config = settings()
    report = config_report(config)
    text = orjson.dumps(report).decode() if as_json else "\n".join(report_lines(report))
    click.echo(scrubbed(text, config.api_key_value()))


def scrubbed(text: str, key: str | None) -> str:
    """``text`` without the key in any spelling, should a setting hold it (a URL's query): the
    report never prints it, and this makes sure. Keys too short to be scrubbed safely (they
    are refused anyway) are left alone rather than blot out every match."""
    if key is None or len(key) < MIN_KEY_CHARS:
        return text
    return Redactor(key)(text)


def config_report(config: Settings) -> dict[str, Any]:
    """Everything ``config`` shows, as JSON-ready values with secrets masked."""
    origins = setting_origins()
    env_file = env_file_used()
    key = config.api_key_value()
    return {
        "database_url": masked_url(config.database_url),
        "embedded": config.is_embedded,
        "data_dir": str(data_dir()),
        "broker_url": masked_url(config.broker_url) if config.broker_url else None,
        "queue": config.queue,
        "api_base": masked_url(config.api_base),
        "api_key": key_summary(key),
        "api_key_problem": key_problem(config) if key is not None else None,
        "env_file": str(env_file) if env_file else None,
        "settings": {
            variable_names(name)[0]: {
                "value": shown_value(name, getattr(config, name)),
                "source": origins[name],
            }
            for name in Settings.model_fields
        },
    }


def key_summary(key: str | None) -> str:
    """Whether a key is set, never the key: a long, plain key shows its first and last three
    characters and its length, so two keys can be told apart; any other only ``set``."""
    if key is None:
        return NOT_SET
    plain = key.isprintable() and not any(ch.isspace() for ch in key)
    if len(key) < KEY_EDGES_FROM or not plain:
        return "set"
    return f"set ({key[:KEY_EDGE]}…{key[-KEY_EDGE:]}, {len(key)} chars)"


def key_problem(config: Settings) -> str | None:
    """Why the key set cannot be used (the check every command makes), or None."""
    from chatbatch.errors import ConfigError

    try:
        config.usable_api_key()
    except ConfigError as exc:
        return str(exc)
    return None


def shown_value(name: str, value: Any) -> Any:
    """A setting's value fit to print and to put in JSON: the key summarised, passwords in
    URLs hidden, paths as text."""
    if name == "api_key":
        return key_summary(value.get_secret_value() if value is not None else None)
    if isinstance(value, str):
        return masked_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text: the essentials first, then every setting and its source."""
    sources = {name: item["source"] for name, item in report["settings"].items()}
    kind = (
        "embedded SQLite, migrated automatically"
        if report["embedded"]
        else "migrated by `chatbatch db upgrade`"
    )
    broker = report["broker_url"] or (
        f"{NOT_SET} (no workers: `chatbatch run` and `process` work batches in this process)"
    )
    key = report["api_key"]
    if report["api_key_problem"]:
        key += f"; unusable: {report['api_key_problem']}"
    lines = [
        f"database:  {report['database_url']} ({kind}; from {sources['CHATBATCH_DATABASE_URL']})",
        f"data dir:  {report['data_dir']}",
        f"broker:    {broker}",
        f"queue:     {report['queue']}",
        f"provider:  {report['api_base']}",
        f"api key:   {key}",
        f".env:      {report['env_file'] or f'none in {Path.cwd()}'}",
        "",
        "settings (environment wins over .env, .env over the default):",
    ]
    width = max(len(name) for name in report["settings"])
    for name, item in report["settings"].items():
        value = NOT_SET if item["value"] in (None, "") else item["value"]
        lines.append(f"  {name:<{width}}  {value}  ({item['source']})")
    return lines
