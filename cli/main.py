"""The ``chatbatch`` command: the group, assembled from one module per command family."""

from __future__ import annotations

import logging

import click

from cli.archive_cmd import archive_command, unarchive_command
from cli.compare_cmd import compare_command
from cli.config_cmd import config_command
from cli.control_cmd import cancel_command, resume_command, retry_command
from cli.db_cmd import db_group
from cli.delete_cmd import delete_command
from cli.export_cmd import export_command
from cli.list_cmd import list_command
from cli.load_cmd import load_command
from cli.report_cmd import report_command
from cli.run import process_command, run_command
from cli.serve_cmd import serve_command
from cli.show_cmd import show_command
from cli.status_cmd import status_command
from cli.usage_cmd import usage_command
from cli.watch_cmd import watch_command
from cli.worker_cmd import worker_command
from cli.workers_cmd import workers_command
from simulator.cli import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="chatbatch", prog_name="chatbatch", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Batch LLM chat completions through a provider's background mode, kept in PostgreSQL."""


cli.add_command(db_group)
cli.add_command(status_command)
cli.add_command(resume_command)
cli.add_command(cancel_command)
cli.add_command(retry_command)
cli.add_command(config_command)
cli.add_command(config_command, name="info")
cli.add_command(load_command)
cli.add_command(export_command)
cli.add_command(run_command)
cli.add_command(process_command)
cli.add_command(worker_command)
cli.add_command(workers_command)
cli.add_command(simulate)
cli.add_command(usage_command)
cli.add_command(report_command)
cli.add_command(watch_command)
cli.add_command(list_command)
cli.add_command(show_command)
cli.add_command(delete_command)
cli.add_command(archive_command)
cli.add_command(unarchive_command)
cli.add_command(compare_command)
cli.add_command(serve_command)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    cli(prog_name="chatbatch")
