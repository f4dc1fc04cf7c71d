"""`make demo`: the two-process model on a local Redis, start to finish, in well under a minute.

A throwaway redis-server (the one on PATH, else the bundled one), a worker process running
examples/demo_tasks.py, and this process as the "web" side enqueueing jobs and watching them finish.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scalr_queue import Job, JobFailedError, enqueue  # noqa: E402
from scalr_queue import close as close_pool  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

_print_lock = threading.Lock()


def say(source: str, text: str) -> None:
    with _print_lock:
        print(f"{source:>6} │ {text}", flush=True)


def follow(process: subprocess.Popen[str], started: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        say("worker", line.rstrip())
        if "worker_started" in line:
            started.set()


async def watch(job: Job, label: str) -> None:
    seen = [(await job.status()).value]
    say("web", f"{label}: job {job.job_id[:8]} {seen[0]}")
    while seen[-1] not in ("complete", "failed"):
        await asyncio.sleep(0.05)
        status = (await job.status()).value
        if status != seen[-1]:
            seen.append(status)
    try:
        outcome = f"result {await job.result(timeout=5)!r}"
    except JobFailedError as exc:
        outcome = f"error {exc.error_type}: {exc.message}"
    say("web", f"{label}: job {job.job_id[:8]} {' → '.join(seen)}: {outcome}")


async def web_side() -> None:
    jobs = [
        ("add(x=2, y=3)", await enqueue("add", x=2, y=3)),
        ("greet(name='Ada', when=now)", await enqueue("greet", name="Ada", when=datetime.now())),
        ("slow(seconds=0.5)", await enqueue("slow", seconds=0.5)),
        ("boom(message='card declined')", await enqueue("boom", message="card declined")),
        ("slow(seconds=3) with a 1 s timeout", await enqueue("slow", seconds=3)),
    ]
    await asyncio.gather(*(watch(job, label) for label, job in jobs if job is not None))
    await close_pool()


def main() -> int:
    with RedisServer() as redis:
        say("demo", f"redis-server {redis.binary} on {redis.url}")
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "SCALR_QUEUE_LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
        }
        os.environ["REDIS_URL"] = redis.url
        command = [sys.executable, "-m", "scalr_queue.worker", "examples.demo_tasks"]
        say("demo", "starting the worker: " + " ".join(command[1:]))
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started = threading.Event()
        reader = threading.Thread(target=follow, args=(worker, started), daemon=True)
        reader.start()
        try:
            if not started.wait(30):
                say("demo", "the worker did not start within 30 s")
                return 1
            asyncio.run(web_side())
            check = subprocess.run([*command, "--check"], cwd=ROOT, env=env, capture_output=True, text=True)
            for line in check.stdout.splitlines():
                say("check", line)
            say("check", f"exit code {check.returncode}")
        finally:
            say("demo", "stopping the worker (SIGTERM) and Redis")
            worker.terminate()
            worker.wait(timeout=30)
            reader.join(timeout=5)
        return 0 if check.returncode == 0 else 1


if __name__ == "__main__":
    started_at = time.monotonic()
    code = main()
    say("demo", f"done in {time.monotonic() - started_at:.1f} s")
    sys.exit(code)
