"""``stats``, ``jobs``, ``job``, ``abort``, ``enqueue``, ``pause``, ``resume``, ``purge``, ``clean``: queues and jobs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from .. import queues
from ..client import Client
from ..exceptions import JobNotFoundError, TaskArgumentsError
from ..records import JobStatus
from ._common import (
    CommandInputError,
    Session,
    json_option,
    on_redis,
    one_line,
    parse_duration,
    print_json,
    print_table,
    redis_url_option,
    user_errors,
)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(seconds)))


@click.command("stats")
@click.argument("queue", required=False)
@json_option
@redis_url_option
@user_errors
def stats_command(*, queue: str | None, as_json: bool) -> None:
    """Per queue: queued, in progress, deferred, failed, live workers, oldest queued job's wait, paused, and how
    many times a middleware put a job back in the last hour (rate limits, overlap locks)."""

    async def gather(s: Session) -> list[queues.QueueStats]:
        names = [await queues.require_queue(s.redis, queue)] if queue else await queues.known_queues(s.redis)
        failed = await queues.failed_by_queue(s.store)
        return [await queues.queue_stats(s.redis, name, failed) for name in names]

    found = on_redis(gather)
    if as_json:
        print_json([q.as_dict() for q in found])
        return
    rows = [
        (
            q.queue,
            q.queued,
            q.in_progress,
            q.deferred,
            q.failed,
            q.workers,
            _age(q.oldest_queued_age_s),
            "yes" if q.paused else "no",
            q.released_last_hour,
        )
        for q in found
    ]
    headers = (
        "queue",
        "queued",
        "in progress",
        "deferred",
        "failed",
        "workers",
        "oldest waiting",
        "paused",
        "released (1 h)",
    )
    print_table(headers, rows, empty="no queues yet (nothing enqueued, no worker running)")


@click.command("jobs")
@click.option("--queue", "-q", help="Queue to list (default: SCALR_QUEUE_NAME, else 'default').")
@click.option(
    "--state",
    type=click.Choice([s.value for s in queues.WAITING_STATES] + ["in-progress", "waiting"]),
    help="Only jobs in this state.",
)
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@redis_url_option
@user_errors
def jobs_command(*, queue: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """The jobs in a queue, soonest first: id, task, state, when it runs, when it was enqueued, try."""

    if state == JobStatus.waiting:
        raise CommandInputError(
            "waiting jobs (held by _depends_on, or a batch's then/catch) are not in their queue until released, and "
            "no index lists them: see one with scalr-queue job ID"
        )

    async def gather(s: Session) -> list[queues.JobSummary]:
        name = await queues.require_queue(s.redis, queue or s.settings.name)
        wanted = JobStatus(state.replace("-", "_")) if state else None
        return await queues.list_jobs(s.redis, name, wanted, limit)

    found = on_redis(gather)
    if as_json:
        print_json([j.as_dict() for j in found])
        return
    rows = [(j.job_id, j.task, j.state, j.run_at, j.enqueued_at, j.try_) for j in found]
    print_table(("job id", "task", "state", "runs at", "enqueued at", "try"), rows, empty="no jobs")


@click.command("job")
@click.argument("job_id")
@json_option
@redis_url_option
@user_errors
def job_command(*, job_id: str, as_json: bool) -> None:
    """One job: its state, arguments, and result or error."""
    details = on_redis(lambda s: queues.job_details(s.redis, s.store, job_id))
    if as_json:
        print_json(details.as_dict())
        return
    for name in ("job_id", "state", "queue", "task", "tries", "enqueued_at"):
        click.echo(f"{name + ':':<13}{getattr(details, name)}")
    click.echo(f"{'arguments:':<13}{json.dumps(details.kwargs, default=str)}")
    if details.state == "complete":
        click.echo(f"{'result:':<13}{json.dumps(details.result, default=str)}")
    error = details.error or (
        {"type": details.failure["error_type"], "message": details.failure["message"]}
        if details.failure
        else None
    )
    if error:
        click.echo(f"{'error:':<13}{error.get('type')}: {one_line(str(error.get('message')), 200)}")
    if details.progress:
        p = details.progress
        said = f" {one_line(p['message'], 200)}" if p.get("message") else ""
        click.echo(f"{'progress:':<13}{p['fraction']:.0%}{said} (at {p['at']})")
    if details.failure:
        click.echo(f"{'failed:':<13}{details.failure['reason']} (scalr-queue failed show {job_id})")
    if details.released:
        r = details.released
        where = f" key={r['key']}" if r.get("key") else ""
        click.echo(
            f"{'released:':<13}{r['count']}x, last {r['at']}: reason={r['reason']}{where} "
            f"retry_in_s={r.get('retry_in_s')}"
        )
    if details.waiting:
        w = details.waiting
        said = (
            f"until batch {w['for_batch']} says so (then/catch)"
            if "for_batch" in w
            else f"for {w['dependencies_pending']} job(s) it depends on (_depends_on)"
        )
        click.echo(f"{'waiting:':<13}{said}")
    if details.workflow:
        f = details.workflow
        if f["kind"] == "batch":
            click.echo(f"{'batch:':<13}{f['batch_id']} ({f['role']})")
        else:
            click.echo(f"{'chain:':<13}{f['chain_id']} (link {f['link']} of {f['links']})")
    if details.problem:
        click.echo(f"{'unreadable:':<13}{one_line(details.problem, 200)}")


@click.command("abort")
@click.argument("job_id")
@redis_url_option
@user_errors
def abort_command(*, job_id: str) -> None:
    """Abort JOB_ID: a waiting job never starts, a running one is cancelled within about a second."""

    async def act(s: Session) -> str:
        client = Client(s.settings, redis=s.redis)
        return await client.backend.abort(job_id, s.settings.name)

    state = on_redis(act)
    if state == "not_found":
        raise JobNotFoundError(
            f"no job {job_id!r}: not queued, running, finished with a kept result, or failed"
        )
    if state == "finished":
        click.echo(f"job {job_id} had finished already: nothing to abort (scalr-queue job {job_id})")
    elif state == "running":
        click.echo(f"aborted {job_id}: running, its worker cancels it within about a second")
    else:
        click.echo(f"aborted {job_id}: it will not start")


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is that JSON value, anything else is a string."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CommandInputError(f"{pair!r} is not key=value (e.g. invoice_id=7 or note='\"text\"')")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


@click.command("enqueue")
@click.argument("task")
@click.argument("arguments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--queue", "-q", help="Queue to put the job on (default: the task's, else SCALR_QUEUE_NAME).")
@click.option("--defer", type=click.FloatRange(min=0), metavar="SECONDS", help="Run it no sooner than this.")
@click.option("--job-id", help="Your own job id; refused if a job with it exists.")
@redis_url_option
@user_errors
def enqueue_command(
    *, task: str, arguments: tuple[str, ...], queue: str | None, defer: float | None, job_id: str | None
) -> None:
    """Queue TASK with KEY=VALUE arguments (JSON where they parse, else strings); prints the job id."""
    kwargs = parse_assignments(arguments)

    async def put(s: Session) -> str | None:
        client = Client(s.settings, redis=s.redis)
        job = await client.enqueue(task, _queue_name=queue, _defer_by=defer, _job_id=job_id, **kwargs)
        return job.job_id if job else None

    created = on_redis(put)
    if created is None:
        raise TaskArgumentsError(
            f"a job with id {job_id!r} already exists (queued, running or with a kept result)"
        )
    click.echo(created)


@click.command("pause")
@click.argument("queue")
@redis_url_option
@user_errors
def pause_command(*, queue: str) -> None:
    """Stop QUEUE's workers taking new jobs; running jobs finish, queued ones wait."""

    async def act(s: Session) -> str:
        name = await queues.require_queue(s.redis, queue)
        await queues.pause(s.redis, name)
        return name

    click.echo(f"paused {on_redis(act)}")


@click.command("resume")
@click.argument("queue")
@redis_url_option
@user_errors
def resume_command(*, queue: str) -> None:
    """Let QUEUE's workers take jobs again."""

    async def act(s: Session) -> tuple[str, bool]:
        name = await queues.require_queue(s.redis, queue)
        return name, await queues.resume(s.redis, name)

    name, was_paused = on_redis(act)
    click.echo(f"resumed {name}" if was_paused else f"{name} was not paused")


@click.command("purge")
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Required: purging cannot be undone.")
@redis_url_option
@user_errors
def purge_command(*, queue: str, yes: bool) -> None:
    """Delete every job waiting in QUEUE (queued or deferred); running jobs are left to finish."""
    if not yes:
        raise CommandInputError(f"purge deletes every waiting job of {queue!r} for good: add --yes to do it")

    async def act(s: Session) -> tuple[str, int]:
        name = await queues.require_queue(s.redis, queue)
        return name, await queues.purge(s.redis, name)

    name, removed = on_redis(act)
    click.echo(f"purged {removed} job(s) from {name}")


@click.command("clean")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 90s, 15m, 2h, 7d.")
@redis_url_option
@user_errors
def clean_command(*, older_than: str) -> None:
    """Delete kept results and failure records older than DURATION."""
    seconds = parse_duration(older_than)
    results, failed = on_redis(lambda s: queues.clean(s.redis, s.store, seconds))
    click.echo(f"deleted {results} result(s) and {failed} failure record(s) older than {older_than}")
