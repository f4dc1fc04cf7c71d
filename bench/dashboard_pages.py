"""How fast each dashboard page answers with 100,000 queued and 10,000 failed jobs (`make bench-dashboard`).

Fills a throwaway Redis (100,000 queued jobs, 2,000 deferred, 10,000 failure records, 10,000 completed ids, an
hour of chart counts, four worker heartbeats), serves `scalr-queue dashboard` as a real process, and loads each
page over HTTP several times. Prints the median and the slowest load, and the Redis commands one load sends (read
from INFO before and after): a page that scanned the queue would show it there.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis as sync_redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scalr_queue  # noqa: E402
from scalr_queue import keys, timeline  # noqa: E402
from scalr_queue.client import default_client  # noqa: E402
from scalr_queue.config import reset_settings  # noqa: E402
from scalr_queue.failed import FailedJob, FailedStore, now_iso  # noqa: E402
from scalr_queue.testing import RedisServer, free_port  # noqa: E402

QUEUE = "bench"
QUEUED = 100_000
DEFERRED = 2_000
FAILED = 10_000
LOADS = 9
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "app/tasks.py", line 12, in send\n' * 8
    + "ValueError: no"
)


async def fill() -> str:
    client = default_client()
    tasks = ["send_invoice_email", "rebuild_report", "sync_crm"]
    for start in range(0, QUEUED, 5_000):
        await client.enqueue_many(
            [(tasks[i % 3], {"invoice_id": i, "note": "x" * 40}) for i in range(start, start + 5_000)],
            _queue_name=QUEUE,
        )
    await client.enqueue_many(
        [("rare_task", {"n": 1})], _queue_name=QUEUE
    )  # one job of a rare task, at the back: the filter's worst case
    await client.enqueue_many(
        [(tasks[0], {"invoice_id": i, "_defer_by": 3600 + i}) for i in range(DEFERRED)], _queue_name=QUEUE
    )
    redis = client.redis
    store = FailedStore(redis, max_age_s=7 * 86_400, max_count=FAILED)
    for start in range(0, FAILED, 500):
        await asyncio.gather(
            *(
                store.record(
                    FailedJob(
                        f"failed-{i}",
                        tasks[i % 3],
                        {"invoice_id": i},
                        QUEUE,
                        5,
                        "raised",
                        "ValueError",
                        "no",
                        TRACEBACK,
                        now_iso(),
                        now_iso(),
                        max_tries=5,
                        worker_id="bench:1:abc",
                    )
                )
                for i in range(start, start + 500)
            )
        )
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for minute in range(60):
            await timeline.record(pipe, QUEUE, "succeeded", 120, at_s=now - 60 * minute)
            await timeline.record(pipe, QUEUE, "failed", 3, at_s=now - 60 * minute)
        for i in range(0, timeline.COMPLETED_CAP, 1_000):
            await timeline.record(
                pipe, QUEUE, "succeeded", 0, job_ids=[f"done-{j}" for j in range(i, i + 1_000)]
            )
        for w in range(4):
            worker_id = f"bench-host:{w}:abc{w}"
            record = {"worker_id": worker_id, "host": "bench-host", "pid": w, "queue": QUEUE, "tasks": tasks,
                      "started_at": now - 600, "beat_at": now, "running": [], "succeeded": 100, "failed": 1,
                      "retried": 2}  # fmt: skip
            pipe.set(keys.worker_key(worker_id), json.dumps(record), ex=600)
            pipe.zadd(keys.workers_key(QUEUE), {worker_id: (now + 600) * 1000})
        await pipe.execute()
    job_id = (await redis.zrange(keys.queue_key(QUEUE), 50_000, 50_000))[0].decode()
    await scalr_queue.close()
    return job_id


def commands(client: sync_redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def main() -> None:
    with RedisServer() as server:
        os.environ["REDIS_URL"] = server.url
        reset_settings()
        started = time.perf_counter()
        job_id = asyncio.run(fill())
        print(f"filled Redis in {time.perf_counter() - started:.1f} s: {QUEUED + 1:,} queued, {DEFERRED:,} deferred, "
              f"{FAILED:,} failed, {timeline.COMPLETED_CAP:,} completed ids")  # fmt: skip
        port = free_port()
        cli = str(Path(sys.executable).parent / "scalr-queue")
        env = {**os.environ, "REDIS_URL": server.url}
        dashboard = subprocess.Popen(
            [cli, "dashboard", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
        )
        pages = {
            "overview": "/",
            "queue, queued, first page": f"/queues/{QUEUE}",
            "queued, page at 50,000": f"/queues/{QUEUE}?state=queued&start=50000",
            "queued, last page": f"/queues/{QUEUE}?state=queued&start={QUEUED - 49}",
            "queued, task filter (rare task)": f"/queues/{QUEUE}?state=queued&task=rare_task",
            "deferred": f"/queues/{QUEUE}?state=deferred",
            "in progress": f"/queues/{QUEUE}?state=in-progress",
            "complete": f"/queues/{QUEUE}?state=complete",
            "failed (queue tab)": f"/queues/{QUEUE}?state=failed",
            "failed store, first page": "/failed",
            "failed store, page at 9,950": "/failed?start=9950",
            "failed store, task filter": f"/failed?queue={QUEUE}&task=sync_crm",
            "job page": f"/jobs/{job_id}",
            "failed job page": "/jobs/failed-5000",
            "workers": "/workers",
        }
        counter = sync_redis.Redis.from_url(server.url)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
                for _ in range(100):
                    try:
                        web.get("/static/dashboard.css")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                print(f"\n{'page':<34} {'median ms':>10} {'max ms':>8} {'commands':>9} {'bytes':>8}")
                for name, path in pages.items():
                    web.get(path)  # warm-up
                    times = []
                    before = commands(counter)
                    for _ in range(LOADS):
                        t0 = time.perf_counter()
                        response = web.get(path)
                        times.append((time.perf_counter() - t0) * 1000)
                        assert response.status_code == 200, (path, response.status_code)
                    per_load = (commands(counter) - before - LOADS) / LOADS  # less our own INFO
                    print(f"{name:<34} {statistics.median(times):>10.1f} {max(times):>8.1f} "
                          f"{per_load:>9.0f} {len(response.content):>8,}")  # fmt: skip
        finally:
            counter.close()
            dashboard.terminate()
            dashboard.wait(timeout=10)


if __name__ == "__main__":
    main()
