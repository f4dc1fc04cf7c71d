"""A module that runs under plain ``python -m arq tests.apps.arq_compat.WorkerSettings`` too."""

from scalr_queue import task
from scalr_queue.worker import build_settings


async def multiply(ctx: dict, x: int, y: int) -> int:
    return x * y


@task(max_tries=2, backoff=0.1)
async def fail(ctx: dict) -> None:
    raise RuntimeError("failed under arq")


tasks = [multiply, fail]
WorkerSettings = build_settings(tasks=tasks)
