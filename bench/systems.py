"""The job systems the benchmark drives, behind one small interface: enqueue, fill, count, start a worker.

plain arq (with its defaults) and scalr_queue always; saq and dramatiq when installed (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402


class System:
    name = "?"

    def __init__(self, url: str, queue: str, concurrency: int = 10) -> None:
        self.url = url
        self.queue = queue
        self.concurrency = concurrency

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.url,
            "BENCH_QUEUE": self.queue,
            "BENCH_CONCURRENCY": str(self.concurrency),
            "SCALR_QUEUE_NAME": self.queue,
            "SCALR_QUEUE_CONCURRENCY": str(self.concurrency),
            "SCALR_QUEUE_LOG_LEVEL": "WARNING",
            "BENCH_ARQ_QUEUE": f"arq:queue:{self.queue}",
            **extra,
        }

    def worker(self) -> list[str]:
        raise NotImplementedError

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        raise NotImplementedError

    async def fill(self, n: int) -> None:
        for first in range(0, n, 1000):
            await asyncio.gather(*(self.enqueue("noop") for _ in range(min(1000, n - first))))

    async def remaining(self, redis: Redis) -> int:
        """Jobs not finished yet."""
        raise NotImplementedError


class Arq(System):
    name = "arq"

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "arq", "bench.tasks.ArqSettings"]

    async def open(self) -> None:
        self.redis = ArqRedis.from_url(self.url)

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        await self.redis.enqueue_job(task, _queue_name=f"arq:queue:{self.queue}", **kwargs)

    async def remaining(self, redis: Redis) -> int:
        return int(await redis.zcard(f"arq:queue:{self.queue}"))


class ScalrQueue(Arq):
    name = "scalr_queue"

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "scalr_queue.worker", "bench.tasks"]

    async def open(self) -> None:
        self.client = Client(load_settings(REDIS_URL=self.url, name=self.queue))

    async def close(self) -> None:
        await self.client.close()

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        await self.client.enqueue(task, **kwargs)

    async def fill(self, n: int) -> None:
        for first in range(0, n, 1000):
            await self.client.enqueue_many([("noop", {}) for _ in range(min(1000, n - first))])


class Saq(System):
    name = "saq"

    def worker(self) -> list[str]:
        return [sys.executable, "-m", "saq", "bench.saq_tasks.settings", "--quiet"]

    async def open(self) -> None:
        from saq import Queue

        self.saq = Queue.from_url(self.url, name=self.queue)
        await self.saq.connect()

    async def close(self) -> None:
        await self.saq.disconnect()

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        await self.saq.enqueue(task, **kwargs)

    async def remaining(self, redis: Redis) -> int:
        return int(await self.saq.count("incomplete"))


class Dramatiq(System):
    name = "dramatiq"

    def worker(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.dramatiq_tasks",
            "--processes",
            "1",
            "--threads",
            str(self.concurrency),
        ]

    async def open(self) -> None:
        os.environ["REDIS_URL"], os.environ["BENCH_QUEUE"] = self.url, self.queue
        import importlib

        import bench.dramatiq_tasks as tasks

        self.tasks = importlib.reload(tasks)

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        getattr(self.tasks, task).send(**kwargs)  # dramatiq's client is synchronous

    async def fill(self, n: int) -> None:
        def send_all() -> None:
            for _ in range(n):
                self.tasks.noop.send()

        await asyncio.to_thread(send_all)

    async def remaining(self, redis: Redis) -> int:
        return int(await redis.hlen(f"dramatiq:{self.queue}.msgs"))


class Taskiq(System):
    """taskiq on taskiq-redis's stream broker (XADD to enqueue, a consumer group to read, XACK when done)."""

    name = "taskiq"

    def worker(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "bench.taskiq_tasks:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(self.concurrency),
            "--log-level",
            "WARNING",
        ]

    async def open(self) -> None:
        os.environ["REDIS_URL"], os.environ["BENCH_QUEUE"] = self.url, self.queue
        import importlib

        import bench.taskiq_tasks as tasks

        self.tasks = importlib.reload(tasks)
        await self.tasks.broker.startup()
        self.stream = self.tasks.STREAM

    async def close(self) -> None:
        await self.tasks.broker.shutdown()

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        await getattr(self.tasks, task).kiq(**kwargs)

    async def remaining(self, redis: Redis) -> int:
        """Entries the group has not read yet (lag) plus those read and not yet acknowledged (pending)."""
        if not await redis.exists(self.stream):
            return 0
        try:
            groups = await redis.xinfo_groups(self.stream)
        except Exception:
            groups = []
        if not groups:
            return int(await redis.xlen(self.stream))
        group = groups[0]
        lag = group.get("lag")
        if lag is None:
            return int(await redis.xlen(self.stream))
        return int(lag) + int(group.get("pending", 0))


def available() -> list[type[System]]:
    """arq and scalr_queue, then each peer that is installed."""
    found: list[type[System]] = [Arq, ScalrQueue]
    for peer, module in ((Saq, "saq"), (Dramatiq, "dramatiq"), (Taskiq, "taskiq_redis")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(peer)
    return found


def now() -> float:
    return time.perf_counter()
