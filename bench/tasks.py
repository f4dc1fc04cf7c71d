"""No-op tasks for the benchmark, as a scalr_queue worker module and as a plain arq WorkerSettings."""

import os


async def noop(ctx: dict) -> None:
    return None


tasks = [noop]


class ArqSettings:
    """Plain arq with its defaults (pickle, 0.5 s polling, 10 jobs at once) on the benchmark's queue."""

    functions = [noop]
    queue_name = os.environ.get("BENCH_ARQ_QUEUE", "arq:queue")
    redis_settings = None  # filled from REDIS_URL below


def _redis_settings() -> object:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


ArqSettings.redis_settings = _redis_settings()  # type: ignore[assignment]
