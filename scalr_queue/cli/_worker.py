"""``worker`` and ``check``: run a worker, probe its health."""

from __future__ import annotations

import asyncio
import sys

import click
from redis.exceptions import ResponseError

from ..config import get_settings
from ..connection import no_permission, permission_denied
from ..exceptions import ScalrQueueError
from ._common import redis_url_option, user_errors

QUEUE_HELP = "Logical queue to serve (default: SCALR_QUEUE_NAME, else 'default'); Redis key arq:queue:<name>."
BURST_HELP = "Exit once the queue is empty."
CHECK_HELP = "Health probe: exit 0 while a live worker serves the queue, 1 otherwise."
ANY_HOST_HELP = "With --check: any live worker counts, not only those on this host (container)."
WATCH_HELP = "Restart the worker, with fresh code, whenever a file under DIR changes (development)."
PROBE_REDIS_TIMEOUT_S = 3.0


def probe(module: str, queue: str | None, any_host: bool) -> None:
    """Print what the probe found and exit 0 (healthy) or 1; every failure, bad settings included, is a 1."""
    from ..health import check
    from ..worker import worker_options

    try:
        options, worker_settings = worker_options(module, queue=queue, settings=get_settings())
        timeout = min(worker_settings.redis_timeout, PROBE_REDIS_TIMEOUT_S)
        probe_settings = worker_settings.model_copy(update={"redis_timeout": timeout})
        report = asyncio.run(check(probe_settings, options["queue_name"], any_host=any_host))
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
@redis_url_option
@user_errors
def worker_command(
    *, module: str, queue: str | None, burst: bool, check: bool, any_host: bool, watch: str | None
) -> None:
    """Run a worker for MODULE's tasks (10 jobs at once, 300 s timeout, 5 tries by default).

    MODULE exports tasks = [...] (or a WorkerSettings class), e.g. src.worker.
    """
    from ..worker import run
    from ..worker import watch as watch_and_run

    if check:
        probe(module, queue, any_host)
    settings = get_settings()  # a bad setting stops here, naming the variable
    if watch:
        watch_and_run(watch, module, queue=queue, burst=burst)
        return
    try:
        run(module, queue=queue, burst=burst)
    except ResponseError as exc:  # the Redis user's ACL lacks a command the worker sends
        if not permission_denied(exc):
            raise
        raise no_permission(settings, exc) from exc


@click.command("check")
@click.argument("module")
@click.option("--queue", "-q", help=QUEUE_HELP)
@click.option("--any-host", is_flag=True, help=ANY_HOST_HELP)
@redis_url_option
def check_command(*, module: str, queue: str | None, any_host: bool) -> None:
    """Health probe for MODULE's worker: exit 0 while a live worker serves the queue, 1 otherwise."""
    probe(module, queue, any_host)
