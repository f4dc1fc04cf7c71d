"""``scalr-queue``: the worker, its health probe, and the operator's commands.

Every error a user can fix prints one line on stderr (``error: ...``) and exits non-zero, never a traceback.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..logs import configure_logging
from ._common import redis_url_option
from ._failed import failed_group
from ._migrate import migrate_command
from ._queues import (
    abort_command,
    clean_command,
    enqueue_command,
    job_command,
    jobs_command,
    pause_command,
    purge_command,
    resume_command,
    stats_command,
)
from ._visibility import dashboard_command, metrics_command
from ._worker import check_command, worker_command


@click.group()
@click.version_option(__version__, "-V", "--version", prog_name="scalr-queue")
@redis_url_option
def cli() -> None:
    """Background jobs for FastAPI apps on arq and Redis."""
    if not (click.get_current_context().invoked_subcommand or "").startswith("worker"):
        configure_logging("console" if sys.stderr.isatty() else "json", "ERROR", stderr=True)


for command in (
    worker_command,
    check_command,
    stats_command,
    jobs_command,
    job_command,
    abort_command,
    enqueue_command,
    failed_group,
    pause_command,
    resume_command,
    purge_command,
    clean_command,
    dashboard_command,
    metrics_command,
    migrate_command,
):
    cli.add_command(command)


def run(command: click.Command, args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a click command so that its usage errors, too, are one line: ``error: ...`` and exit code 2."""
    try:
        command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)


def main() -> None:
    """The ``scalr-queue`` console script."""
    run(cli, prog_name="scalr-queue")


__all__ = ["cli", "main", "run", "worker_command"]
