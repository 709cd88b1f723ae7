"""``--providers FILE``: the providers file for this command, as ``CHATBATCH_PROVIDERS`` would
name it (set before the settings are first read, so the logs scrub its keys too)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from chatbatch.settings import get_settings


def _use_providers_file(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    """Make ``path`` this process's providers file (the option is eager: before any work)."""
    if path is None:
        return
    os.environ["CHATBATCH_PROVIDERS"] = str(path)
    get_settings.cache_clear()


providers_option = click.option(
    "--providers",
    type=click.Path(path_type=Path, dir_okay=False),
    callback=_use_providers_file,
    expose_value=False,
    is_eager=True,
    help="TOML providers file: which provider serves which model (default: $CHATBATCH_PROVIDERS).",
)
