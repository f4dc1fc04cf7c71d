"""What a Redis Sentinel failover loses: run a worker and two producers, fail the primary over, count.

    python scripts/failover_loss.py [--runs 3]

One primary, one replica, three sentinels (tests/ha.py), a worker subprocess whose task notes every run in a file
outside Redis, and two producers enqueueing as fast as they can: one returning once the primary has the job
(SCALR_QUEUE_WAIT_REPLICAS=0), one waiting for the replica (=1). Each run fails the primary over under load,
either with SENTINEL FAILOVER or with a SIGKILL of the primary, then waits for the queue to drain and counts, per
producer, the acknowledged jobs that never ran (lost) and the jobs that ran more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scalr_queue import Client, NotReplicatedError, RedisUnavailableError  # noqa: E402
from scalr_queue.config import Settings  # noqa: E402
from tests.ha import SentinelGroup  # noqa: E402

LOAD_BEFORE_S = 3.0
LOAD_AFTER_S = 8.0
LEASE_S = 3
DRAIN_LIMIT_S = 120  # a worker that stopped running jobs is reported, not waited for


async def produce(client: Client, acked: list[str], refused: list[str], until: list[bool]) -> None:
    n = 0
    while not until:
        n += 1
        job_id = f"{'safe' if client.settings.wait_replicas else 'fast'}-{n}"
        try:
            await client.enqueue("note_run", n=n, _job_id=job_id)
        except (NotReplicatedError, RedisUnavailableError):
            refused.append(job_id)
            await asyncio.sleep(0.01)
        else:
            acked.append(job_id)
        await asyncio.sleep(0)


async def one_run(kill: bool, directory: Path, server_args: tuple[str, ...]) -> dict[str, int]:
    runs_file = directory / "runs.txt"
    runs_file.touch()
    with SentinelGroup(directory, server_args=server_args) as group:
        env = {
            **os.environ,
            "REDIS_URL": "redis://mymaster/0",
            "SCALR_QUEUE_SENTINELS": group.sentinel_setting,
            "SCALR_QUEUE_NAME": "failover",
            "SCALR_QUEUE_LEASE": str(LEASE_S),
            "SCALR_QUEUE_CONCURRENCY": "50",
            "SCALR_QUEUE_LOG_FORMAT": "json",
            "RUNS_FILE": str(runs_file),
        }
        with (directory / "worker.log").open("w") as log:
            worker = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
                [sys.executable, "-m", "scalr_queue.worker", "tests.apps.runs"], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = Settings(REDIS_URL=env["REDIS_URL"], sentinels=group.sentinel_setting, name="failover")  # type: ignore[call-arg]
        fast, safe = Client(base), Client(base.model_copy(update={"wait_replicas": 1}))
        acked: dict[str, list[str]] = {"fast": [], "safe": []}
        refused: dict[str, list[str]] = {"fast": [], "safe": []}
        stop: list[bool] = []
        producers = [
            asyncio.create_task(produce(fast, acked["fast"], refused["fast"], stop)),
            asyncio.create_task(produce(safe, acked["safe"], refused["safe"], stop)),
        ]
        await asyncio.sleep(LOAD_BEFORE_S)
        old = group.primary_port()
        if kill:
            assert group.primary.process is not None
            group.primary.process.kill()
            group.primary.process.wait()
        else:
            group.failover()
        await asyncio.to_thread(group.wait_for_new_primary, old, 30)
        if kill:
            group.primary.start()
        await asyncio.sleep(LOAD_AFTER_S)
        stop.append(True)
        await asyncio.gather(*producers)
        # Drain: the queue empty and no new run noted for a while (re-runs wait out a lease).
        redis = fast.redis
        quiet_since, size, deadline = time.monotonic(), -1, time.monotonic() + DRAIN_LIMIT_S
        while (
            time.monotonic() - quiet_since < LEASE_S + 3
            and worker.poll() is None
            and time.monotonic() < deadline
        ):
            now_size = runs_file.stat().st_size
            if now_size != size or await redis.zcard("arq:queue:failover"):
                quiet_since, size = time.monotonic(), now_size
            await asyncio.sleep(0.2)
        await fast.close()
        await safe.close()
        exited = worker.poll()
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise SystemExit(
                f"the worker did not stop within 60 s of SIGTERM; its log: {directory / 'worker.log'}"
            ) from None
    ran = collections.Counter(runs_file.read_text().split())
    figures = {"worker exited": 0 if exited is None else 1}
    for name in ("fast", "safe"):
        figures[f"{name} acknowledged"] = len(acked[name])
        figures[f"{name} lost"] = sum(1 for job_id in acked[name] if job_id not in ran)
        figures[f"{name} refused"] = len(refused[name])
        figures[f"{name} refused, ran anyway"] = sum(1 for job_id in refused[name] if job_id in ran)
    figures["ran twice or more"] = sum(1 for count in ran.values() if count > 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["failover", "kill"], help="run one kind of failover only")
    parser.add_argument(
        "--min-replicas",
        action="store_true",
        help="run the servers with min-replicas-to-write 1 (writes fail loudly)",
    )
    args = parser.parse_args()
    server_args = (
        ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10") if args.min_replicas else ()
    )
    kinds = {"failover": [False], "kill": [True], None: [False, True]}[args.only]
    for kill in kinds:
        for run in range(args.runs):
            directory = Path(tempfile.mkdtemp(prefix="failover-"))
            figures = asyncio.run(one_run(kill, directory, server_args))
            shutil.rmtree(directory)  # kept when the run fails, for its logs
            how = "SIGKILL of the primary" if kill else "SENTINEL FAILOVER"
            print(f"{how}, run {run + 1}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
