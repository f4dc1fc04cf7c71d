"""`make screenshots`: every dashboard page, as an operator sees it, in build/screenshots/*.png.

Runs a throwaway Redis, two real workers (queues `default` and `bulk`, tests/apps/dashboard.py) and
`scalr-queue dashboard`, puts real jobs through them (done, running, deferred, retried and failed, a paused queue),
then opens each page in headless Chromium. The chart's earlier minutes are filled in with
`scalr_queue.timeline.record` (an hour of real traffic would take an hour); the current minute is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scalr_queue  # noqa: E402
from scalr_queue import queues, timeline  # noqa: E402
from scalr_queue.client import default_client  # noqa: E402
from scalr_queue.config import reset_settings  # noqa: E402
from scalr_queue.testing import RedisServer, free_port  # noqa: E402
from tests.browser import chromium  # noqa: E402

OUT = ROOT / "build" / "screenshots"
DOCS_IMAGES = {"overview.png": "dashboard-overview.png", "failed-job.png": "dashboard-failed-job.png"}


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


async def fill(redis_url: str) -> dict[str, str]:
    """Real jobs through real workers; returns ids of jobs worth a page of their own."""
    os.environ["REDIS_URL"] = redis_url
    reset_settings()
    enqueue = scalr_queue.enqueue
    redis = default_client().redis
    await redis.set("flag:invoices", "1")
    done = [await enqueue("add", x=i, y=i) for i in range(40)]
    failed = await enqueue("fails_while_flag", flag="flag:invoices")
    for i in range(3):
        await enqueue("fails_while_flag", flag="flag:invoices", _job_id=f"invoice-sync-{i}")
    await enqueue("always_fails", label="nightly export")
    for seconds in (45, 50, 55):
        await enqueue("sleep", seconds=seconds)
    for i in range(12):
        await enqueue("add", x=i, y=1, _defer_by=600 + 60 * i)
    assert done[-1] is not None
    assert failed is not None
    await done[-1].result(timeout=20)
    with contextlib.suppress(scalr_queue.JobFailedError):
        await failed.result(timeout=20)
    await asyncio.sleep(1.5)  # always_fails: three tries, 0.1 s and 0.2 s apart
    await queues.pause(redis, "bulk")
    for i in range(25):
        await enqueue("rebuild", report_id=i, _queue_name="bulk")
    rng = random.Random(13)
    now = time.time()
    for minutes_ago in range(1, 60):
        at = now - 60 * minutes_ago
        await timeline.record(redis, "default", "succeeded", rng.randint(30, 90), at_s=at)
        await timeline.record(redis, "bulk", "succeeded", rng.randint(5, 25), at_s=at)
        if rng.random() < 0.25:
            await timeline.record(redis, "default", "retried", rng.randint(1, 6), at_s=at)
        if rng.random() < 0.12:
            await timeline.record(redis, "default", "failed", rng.randint(1, 3), at_s=at)
    ids = {"failed": failed.job_id, "complete": done[0].job_id if done[0] else ""}
    await scalr_queue.close()
    return ids


async def shoot(base: str, ids: dict[str, str]) -> list[Path]:
    pages = {
        "overview.png": "/",
        "queue.png": "/queues/default",
        "queue-deferred.png": "/queues/default?state=deferred",
        "in-progress.png": "/queues/default?state=in-progress",
        "failed.png": "/failed",
        "failed-job.png": f"/jobs/{ids['failed']}",
        "complete-job.png": f"/jobs/{ids['complete']}",
        "workers.png": "/workers",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        for name, path in pages.items():
            await page.goto(base + path)
            await page.screenshot(path=str(OUT / name), full_page=True)
            written.append(OUT / name)
    return written


def main() -> None:
    with RedisServer() as server:
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "SCALR_QUEUE_NAME": "default",
            "SCALR_QUEUE_SHUTDOWN_GRACE": "1",
            "SCALR_QUEUE_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        port = free_port()
        worker = [sys.executable, "-m", "scalr_queue.worker", "tests.apps.dashboard"]
        scalr_queue_cli = str(Path(sys.executable).parent / "scalr-queue")
        processes = [
            start(worker, env),
            start([*worker, "--queue", "bulk"], env),
            start([scalr_queue_cli, "dashboard", "--port", str(port)], env),
        ]
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/")
            ids = asyncio.run(fill(server.url))
            for path in asyncio.run(shoot(base, ids)):
                print(path.relative_to(ROOT))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=20)
    if "--docs" in sys.argv:
        for shot, image in DOCS_IMAGES.items():
            (ROOT / "docs" / "img").mkdir(exist_ok=True)
            (ROOT / "docs" / "img" / image).write_bytes((OUT / shot).read_bytes())
            print(f"docs/img/{image}")


if __name__ == "__main__":
    main()
