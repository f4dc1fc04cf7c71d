"""``scalr-queue metrics``: queue-level gauges read from Redis at each scrape, for any number of workers.

A worker's own metrics say what that worker did; how deep a queue is, how old its oldest ready job is and how
many workers serve it are facts of Redis, so one exporter reports them for every queue (run one replica).
Each scrape reads Redis afresh (a few commands per queue, no scan) in the scraping thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import keys
from .config import Settings
from .connection import REDIS_DOWN_ERRORS, create_redis, redis_call
from .exceptions import RedisUnavailableError
from .failed import FailedStore
from .logs import get_logger
from .metrics import require
from .stats import queue_counts

log = get_logger("scalr_queue.exporter")

GAUGES = {
    "scalr_queue_queue_ready_jobs": "Jobs due now and waiting for a worker.",
    "scalr_queue_queue_deferred_jobs": "Jobs waiting for a later run time (scheduled, or backing off before a retry).",
    "scalr_queue_queue_oldest_ready_age_seconds": "Seconds the longest-waiting ready job has been due (0 when none).",
    "scalr_queue_jobs_in_progress": "Jobs running now (holding a worker's lease).",
    "scalr_queue_failed_jobs": "Records in the failed store.",
    "scalr_queue_workers": "Live workers serving the queue (heartbeat not run out).",
    "scalr_queue_queue_paused": "1 while the queue is paused (its workers take no new jobs), else 0.",
}
UP_GAUGE = "scalr_queue_redis_up"


@dataclass(frozen=True)
class QueueSample:
    queue: str
    values: dict[str, float]


async def sample(settings: Settings) -> list[QueueSample]:
    """One reading of every known queue; RedisUnavailableError if Redis does not answer in time."""
    redis = create_redis(settings)
    store = FailedStore(redis, max_age_s=settings.failed_max_age, max_count=settings.failed_max_count)
    try:
        async with redis_call(settings):
            members: set[bytes] = await redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # sync | async
            samples = []
            for name in sorted(m.decode(errors="replace") for m in members):
                counts = await queue_counts(redis, name)
                now_ms = time.time() * 1000
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.zcount(keys.workers_key(name), int(now_ms), "+inf")
                    pipe.exists(keys.paused_key(name))
                    workers, paused = await pipe.execute()
                oldest = counts.oldest_due_ms
                samples.append(
                    QueueSample(
                        name,
                        {
                            "scalr_queue_queue_ready_jobs": counts.queued,
                            "scalr_queue_queue_deferred_jobs": counts.deferred,
                            "scalr_queue_queue_oldest_ready_age_seconds": 0.0
                            if oldest is None
                            else max((now_ms - oldest) / 1000, 0.0),
                            "scalr_queue_jobs_in_progress": counts.in_progress,
                            "scalr_queue_failed_jobs": await store.count(name),
                            "scalr_queue_workers": int(workers),
                            "scalr_queue_queue_paused": 1 if paused else 0,
                        },
                    )
                )
            return samples
    finally:
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await redis.aclose(close_connection_pool=True)


class QueueCollector:
    """A prometheus-client collector that reads Redis at each scrape; Redis down gives ``scalr_queue_redis_up 0``."""

    def __init__(self, settings: Settings) -> None:
        require()
        from prometheus_client.core import GaugeMetricFamily

        self.settings = settings
        self._gauge = GaugeMetricFamily

    def describe(self) -> list[Any]:
        return []  # registered without a describe-time scrape (Redis may be down at start)

    def collect(self) -> Iterator[Any]:
        try:
            samples = self._read()
            up = 1.0
        except RedisUnavailableError as exc:
            log.warning("exporter_redis_unavailable", error=str(exc))
            samples, up = [], 0.0
        yield self._gauge(UP_GAUGE, "1 if the exporter's last read of Redis succeeded, else 0.", value=up)
        for name, help_text in GAUGES.items():
            family = self._gauge(name, help_text, labels=["queue"])
            for s in samples:
                family.add_metric([s.queue], s.values[name])
            yield family

    def _read(self) -> list[QueueSample]:
        """A fresh event loop for the read: in the scraping thread, or in a thread of its own when this thread
        already runs a loop (a collector registered in an async app)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(sample(self.settings))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(sample(self.settings))).result()


def registry(settings: Settings) -> Any:
    """A registry with only the queue gauges (the exporter's own process metrics left out)."""
    prometheus_client = require()
    reg = prometheus_client.CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector(settings))
    return reg


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the gauges on ``http://host:port/metrics`` until interrupted."""
    prometheus_client = require()
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=registry(settings))
    try:
        while thread.is_alive():
            thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
