"""Running a worker: in this process (``run``/``serve``) or restarted on file changes (``watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from types import ModuleType

from .. import metrics
from ..config import Settings, get_settings
from ..connection import create_redis, redis_call
from ..logs import configure_logging
from ._engine import Worker, loop_factory
from ._settings import worker_options


async def serve(
    module: ModuleType | str,
    *,
    queue: str | None = None,
    burst: bool = False,
    settings: Settings | None = None,
    handle_signals: bool = True,
    exit_watchdog: bool = False,
) -> Worker:
    """Run the worker for ``module`` on the running loop until a signal (or, with ``burst``, an empty queue)."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level, arq_lines=settings.arq_job_lines)
    options, worker_settings = worker_options(module, queue=queue, settings=settings)
    redis = create_redis(worker_settings)
    try:
        async with redis_call(worker_settings):
            await redis.ping()
    except BaseException:
        await redis.aclose(close_connection_pool=True)
        raise
    if worker_settings.metrics_port is not None:
        metrics.start_worker_server(worker_settings.metrics_port)
    worker = Worker(
        **options,
        redis_pool=redis,
        burst=burst or bool(options.get("burst")),
        handle_signals=handle_signals,
        settings=worker_settings,
        exit_watchdog=exit_watchdog,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return worker


def run(module: ModuleType | str, *, queue: str | None = None, burst: bool = False) -> None:
    """Run the worker for ``module`` in this process until SIGTERM/SIGINT (or an empty queue with ``burst``).

    On uvloop when it is installed (``pip install uvloop``): the event loop is a good part of a job's cost.
    """
    with asyncio.Runner(loop_factory=loop_factory(get_settings().event_loop)) as runner:
        runner.run(serve(module, queue=queue, burst=burst, exit_watchdog=True))


def watch(directory: str, module: str, *, queue: str | None = None, burst: bool = False) -> None:
    """Run the worker in a child process and restart it, with fresh code, whenever a file in ``directory`` changes."""
    try:
        from watchfiles import run_process
    except ImportError:  # pragma: no cover - watchfiles ships with the dev extra
        raise SystemExit("error: --watch needs watchfiles: pip install watchfiles") from None
    command = [sys.executable, "-m", "scalr_queue.worker", module]
    if queue:
        command += ["--queue", queue]
    if burst:
        command.append("--burst")
    with contextlib.suppress(KeyboardInterrupt):
        run_process(directory, target=shlex.join(command), target_type="command")
