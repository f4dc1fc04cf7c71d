"""``scalr-queue``: the worker and its health probe (the operator commands build on this group)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import click

from . import __version__
from .config import Settings, get_settings
from .connection import REDIS_DOWN_ERRORS, create_redis, unavailable
from .exceptions import JobNotFoundError, ScalrQueueError
from .failed import FailedStore

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

MODULE_HELP = "Worker module exporting tasks = [...] (or a WorkerSettings class), e.g. src.worker."
QUEUE_HELP = "Logical queue to serve (default: SCALR_QUEUE_NAME, else 'default'); Redis key arq:queue:<name>."
BURST_HELP = "Exit once the queue is empty."
CHECK_HELP = "Health probe: exit 0 while a live worker serves the queue, 1 otherwise."
ANY_HOST_HELP = "With --check: any live worker counts, not only those on this host (container)."
WATCH_HELP = "Restart the worker, with fresh code, whenever a file under DIR changes (development)."


def user_errors(fn: F) -> F:
    """A scalr_queue error is the user's to fix: one line on stderr and exit code 1, no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ScalrQueueError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, "-V", "--version", prog_name="scalr-queue")
def main() -> None:
    """Background jobs for FastAPI apps on arq and Redis."""


def _check(module: str, queue: str | None, any_host: bool) -> None:
    """Print what the probe found and exit 0 (healthy) or 1; every failure, bad settings included, is a 1."""
    from .health import check
    from .worker import settings_for_module

    try:
        settings = get_settings()
        settings_cls = settings_for_module(module, queue=queue, settings=settings)
        worker_settings: Settings = vars(settings_cls)["__scalr_queue_settings__"]
        probe_settings = worker_settings.model_copy(
            update={"redis_timeout": min(worker_settings.redis_timeout, 3.0)}
        )
        report = asyncio.run(check(probe_settings, vars(settings_cls)["queue_name"], any_host=any_host))
    except ScalrQueueError as exc:
        click.echo(f"unhealthy: {exc}")
        sys.exit(1)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.healthy else 1)


@click.command("worker")
@click.argument("module")
@click.option("--queue", "-q", help=QUEUE_HELP)
@click.option("--burst", is_flag=True, help=BURST_HELP)
@click.option("--check", is_flag=True, help=CHECK_HELP)
@click.option("--any-host", is_flag=True, help=ANY_HOST_HELP)
@click.option("--watch", type=click.Path(exists=True, file_okay=False), metavar="DIR", help=WATCH_HELP)
@user_errors
def worker_command(
    *, module: str, queue: str | None, burst: bool, check: bool, any_host: bool, watch: str | None
) -> None:
    """Run a worker for MODULE's tasks (10 jobs at once, 300 s timeout, 5 tries by default)."""
    from .worker import run
    from .worker import watch as watch_and_run

    if check:
        _check(module, queue, any_host)
    get_settings()  # a bad setting stops here, naming the variable
    if watch:
        watch_and_run(watch, module, queue=queue, burst=burst)
    else:
        run(module, queue=queue, burst=burst)


@click.command("check")
@click.argument("module")
@click.option("--queue", "-q", help=QUEUE_HELP)
@click.option("--any-host", is_flag=True, help=ANY_HOST_HELP)
def check_command(*, module: str, queue: str | None, any_host: bool) -> None:
    """Health probe for MODULE's worker: exit 0 while a live worker serves the queue, 1 otherwise."""
    _check(module, queue, any_host)


main.add_command(worker_command)
main.add_command(check_command)


# --- the failed store -------------------------------------------------------------------------------------


async def _on_store(action: Callable[[FailedStore], Awaitable[T]]) -> T:
    """Run ``action`` against the failed store, bounded in time; Redis down is a one-line error."""
    settings = get_settings()
    redis = create_redis(settings)
    try:
        store = FailedStore(redis, max_age_s=settings.failed_max_age, max_count=settings.failed_max_count)
        try:
            async with asyncio.timeout(settings.redis_timeout * 6):
                return await action(store)
        except REDIS_DOWN_ERRORS as exc:
            raise unavailable(settings, exc) from exc
    finally:
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await redis.aclose(close_connection_pool=True)


def _run_on_store(action: Callable[[FailedStore], Awaitable[T]]) -> T:
    return asyncio.run(_on_store(action))


def _one_line(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.group("failed")
def failed_group() -> None:
    """Jobs that ended without success: list, show, retry, forget, flush."""


@failed_group.command("list")
@click.option("--queue", "-q", help="Only this queue's failures.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@user_errors
def failed_list(*, queue: str | None, limit: int, as_json: bool) -> None:
    """The newest failures first."""
    jobs = _run_on_store(lambda store: store.list(limit=limit, queue=queue))
    if as_json:
        for job in jobs:
            click.echo(job.to_json())
        return
    if not jobs:
        click.echo("no failed jobs")
        return
    click.echo(
        f"{'job id':<34} {'task':<24} {'queue':<12} {'reason':<20} {'tries':>5}  {'failed at':<24} error"
    )
    for job in jobs:
        click.echo(
            f"{job.job_id:<34} {job.task:<24} {job.queue:<12} {job.reason:<20} {job.tries:>5}  {job.failed_at:<24} "
            f"{_one_line(f'{job.error_type}: {job.message}')}"
        )


@failed_group.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON.")
@user_errors
def failed_show(*, job_id: str, as_json: bool) -> None:
    """One failure with its arguments and traceback."""
    job = _run_on_store(lambda store: store.get(job_id))
    if job is None:
        raise JobNotFoundError(f"no failed job {job_id!r} (see: scalr-queue failed list)")
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
@user_errors
def failed_retry(*, job_id: str | None, retry_all: bool, queue: str | None) -> None:
    """Queue a failed job again: same id, task, arguments and queue, fresh tries. Prints the job id."""
    if bool(job_id) == retry_all:
        raise click.UsageError("give a JOB_ID or --all")

    async def retry(store: FailedStore) -> list[str]:
        if job_id:
            if not await store.retry(job_id):
                raise JobNotFoundError(f"no failed job {job_id!r} (see: scalr-queue failed list)")
            return [job_id]
        done = []
        for job in await store.list(limit=store.max_count, queue=queue):
            with contextlib.suppress(ValueError):
                if await store.retry(job.job_id):
                    done.append(job.job_id)
        return done

    try:
        for retried in _run_on_store(retry):
            click.echo(retried)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@failed_group.command("forget")
@click.argument("job_id")
@user_errors
def failed_forget(*, job_id: str) -> None:
    """Drop one failure record."""
    if not _run_on_store(lambda store: store.forget(job_id)):
        raise JobNotFoundError(f"no failed job {job_id!r} (see: scalr-queue failed list)")
    click.echo(f"forgot {job_id}")


@failed_group.command("flush")
@click.option("--queue", "-q", help="Only this queue's failures.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@user_errors
def failed_flush(*, queue: str | None, yes: bool) -> None:
    """Drop every failure record (of --queue, if given)."""
    if not yes:
        click.confirm(f"forget every failed job{f' of queue {queue!r}' if queue else ''}?", abort=True)
    count = _run_on_store(lambda store: store.flush(queue=queue))
    click.echo(f"forgot {count} failed job(s)")
