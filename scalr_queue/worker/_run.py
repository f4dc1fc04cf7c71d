"""Running a worker: in this process (``run``/``serve``) or restarted on file changes (``watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from arq.worker import Worker

from ..config import Settings, get_settings
from ..connection import create_redis, redis_call
from ..logs import configure_logging
from ._engine import ScalrWorker
from ._settings import ARQ_SETTINGS, settings_for_module


async def serve(
    module: ModuleType | str,
    *,
    queue: str | None = None,
    burst: bool = False,
    settings: Settings | None = None,
    handle_signals: bool = True,
) -> Worker:
    """Run the worker for ``module`` on the running loop until a signal (or, with ``burst``, an empty queue)."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings_cls = settings_for_module(module, queue=queue, settings=settings)
    worker_settings: Settings = vars(settings_cls)["__scalr_queue_settings__"]
    options: dict[str, Any] = {k: v for k, v in vars(settings_cls).items() if k in ARQ_SETTINGS}
    options.pop("redis_settings", None)
    redis = create_redis(worker_settings)
    try:
        async with redis_call(worker_settings):
            await redis.ping()
    except BaseException:
        await redis.aclose(close_connection_pool=True)
        raise
    options.update(redis_pool=redis, handle_signals=handle_signals)
    if burst:
        options["burst"] = True
    worker = ScalrWorker(settings=worker_settings, **options)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        # arq's signal handler cancels its main task; a cancellation of our own caller still propagates.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    finally:
        await worker.close()
    return worker


def run(module: ModuleType | str, *, queue: str | None = None, burst: bool = False) -> None:
    """Run the worker for ``module`` in this process until SIGTERM/SIGINT (or an empty queue with ``burst``).

    On uvloop when it is installed (``pip install uvloop``): the event loop is a good part of a job's cost.
    """
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(serve(module, queue=queue, burst=burst))


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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
