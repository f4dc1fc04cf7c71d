"""``migrate``: move the jobs waiting on another queue key (plain arq's ``arq:queue``) into a scalr_queue queue."""

from __future__ import annotations

import click

from ..migrate import MigrationReport, migrate
from ._common import Session, on_redis, print_table, redis_url_option, user_errors

UNPICKLE_HELP = (
    "Re-encode pickled jobs (plain arq's format) as JSON. Unpickling runs code stored in Redis: use it only "
    "for data you trust. Without it a pickle is never loaded; it is reported and left."
)


@click.command("migrate")
@click.argument("source")
@click.option(
    "--to",
    "to",
    metavar="QUEUE",
    help="Queue to move the jobs into (default: SCALR_QUEUE_NAME, else 'default').",
)
@click.option("--dry-run", is_flag=True, help="Say what would move and what would stay; change nothing.")
@click.option("--unpickle", is_flag=True, help=UNPICKLE_HELP)
@redis_url_option
@user_errors
def migrate_command(*, source: str, to: str | None, dry_run: bool, unpickle: bool) -> None:
    """Move the jobs waiting in SOURCE (e.g. arq:queue, plain arq's queue) into a scalr_queue queue.

    Each job keeps its id, when it may run and its tries, and moves in one atomic step: JSON jobs as they are,
    pickled ones only with --unpickle. Running jobs, and jobs that cannot move, stay with the reason. Running it
    again moves what is left and nothing twice.
    """

    async def act(s: Session) -> MigrationReport:
        return await migrate(s.redis, source, to or s.settings.name, unpickle=unpickle, dry_run=dry_run)

    report = on_redis(act)
    print_report(report)


def print_report(report: MigrationReport) -> None:
    """The summary: how many moved (or would), then each job left with its reason."""
    would = "would move" if report.dry_run else "moved"
    kinds = {kind: sum(1 for job in report.moved if job.kind == kind) for kind in ("json", "pickle")}
    detail = (
        f" ({kinds['json']} JSON as is, {kinds['pickle']} re-encoded from pickle)" if report.moved else ""
    )
    click.echo(f"{would} {len(report.moved)} job(s) from {report.source} to {report.destination}{detail}")
    if report.gone:
        click.echo(f"{len(report.gone)} job(s) were taken by a worker or ended while migrate ran")
    if not report.left:
        click.echo(f"{'would leave' if report.dry_run else 'left'} nothing on {report.source}")
        return
    click.echo(f"{'would leave' if report.dry_run else 'left'} {len(report.left)} job(s) on {report.source}:")
    rows = [(job.job_id, job.task or "?", job.reason) for job in report.left]
    print_table(("job id", "task", "why"), rows, empty="")
