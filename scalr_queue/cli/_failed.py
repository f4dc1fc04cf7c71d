"""``failed list | show | retry | forget | flush``: the failed store from the command line."""

from __future__ import annotations

import json

import click

from ..exceptions import JobNotFoundError
from ._common import (
    Session,
    json_option,
    on_redis,
    one_line,
    print_json,
    print_table,
    redis_url_option,
    user_errors,
)


def _missing(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no failed job {job_id!r} (see: scalr-queue failed list)")


@click.group("failed")
def failed_group() -> None:
    """Jobs that ended without success: list, show, retry, forget, flush."""


@failed_group.command("list")
@click.option("--queue", "-q", help="Only this queue's failures.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@redis_url_option
@user_errors
def failed_list(*, queue: str | None, limit: int, as_json: bool) -> None:
    """The newest failures first."""
    jobs = on_redis(lambda s: s.store.list(limit=limit, queue=queue))
    if as_json:
        print_json([json.loads(job.to_json()) for job in jobs])
        return
    rows = [
        (j.job_id, j.task, j.queue, j.reason, j.tries, j.failed_at, one_line(f"{j.error_type}: {j.message}"))
        for j in jobs
    ]
    print_table(
        ("job id", "task", "queue", "reason", "tries", "failed at", "error"), rows, empty="no failed jobs"
    )


@failed_group.command("show")
@click.argument("job_id")
@json_option
@redis_url_option
@user_errors
def failed_show(*, job_id: str, as_json: bool) -> None:
    """One failure with its arguments and traceback."""
    job = on_redis(lambda s: s.store.get(job_id))
    if job is None:
        raise _missing(job_id)
    if as_json:
        click.echo(job.to_json())
        return
    for name in (
        "job_id",
        "task",
        "queue",
        "reason",
        "tries",
        "max_tries",
        "enqueued_at",
        "failed_at",
        "worker_id",
    ):
        click.echo(f"{name + ':':<13}{getattr(job, name)}")
    click.echo(f"{'arguments:':<13}{json.dumps(job.kwargs, default=str)}")
    click.echo(f"{'error:':<13}{job.error_type}: {job.message}")
    for key, value in job.extra.items():
        click.echo(f"{key + ':':<13}{value}")
    if job.traceback:
        click.echo("traceback:")
        click.echo(job.traceback.rstrip())


@failed_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job (of --queue, if given).")
@click.option("--queue", "-q", help="With --all: only this queue's failures.")
@click.option("--task", "-t", help="With --all: only this task's failures.")
@redis_url_option
@user_errors
def failed_retry(*, job_id: str | None, retry_all: bool, queue: str | None, task: str | None) -> None:
    """Queue a failed job again: same id, task, arguments and queue, fresh tries. Prints the job id."""
    if bool(job_id) == retry_all:
        raise click.UsageError("give a JOB_ID or --all")

    async def retry(s: Session) -> list[str]:
        if job_id:
            if not await s.store.retry(job_id):
                raise _missing(job_id)
            return [job_id]
        return await s.store.retry_all(queue=queue, task=task)

    for retried in on_redis(retry):
        click.echo(retried)


@failed_group.command("forget")
@click.argument("job_id")
@redis_url_option
@user_errors
def failed_forget(*, job_id: str) -> None:
    """Drop one failure record."""
    if not on_redis(lambda s: s.store.forget(job_id)):
        raise _missing(job_id)
    click.echo(f"forgot {job_id}")


@failed_group.command("flush")
@click.option("--queue", "-q", help="Only this queue's failures.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@redis_url_option
@user_errors
def failed_flush(*, queue: str | None, yes: bool) -> None:
    """Drop every failure record (of --queue, if given)."""
    if not yes:
        click.confirm(f"forget every failed job{f' of queue {queue!r}' if queue else ''}?", abort=True)
    count = on_redis(lambda s: s.store.flush(queue=queue))
    click.echo(f"forgot {count} failed job(s)")
