"""List the Redis commands each role sends (worker, producer, CLI), to keep docs/security.md's ACLs exact.

    python scripts/acl_commands.py

Each role runs its whole workload (tests/roles.py) against a Redis of its own; the commands are read from
``INFO commandstats``, which counts commands called from Lua scripts too. Setting up the data a role needs happens
before the counters are reset, so it is not counted. Compare the output with the ACL SETUSER lines of
docs/security.md; tests/test_acl.py proves each role works under exactly those lines.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from scalr_queue.testing import RedisServer  # noqa: E402
from tests.conftest import WorkerProcess  # noqa: E402
from tests.roles import (  # noqa: E402
    fake_live_worker,
    prepare_finished_jobs,
    prepare_worker_jobs,
    run_cli_role,
    run_producer_role,
    run_worker_role,
)

PASSWORD = "acl-commands"
NOT_THE_ROLE = {"config|resetstat"}  # the counting itself


@contextmanager
def spawner() -> Iterator[Callable[..., WorkerProcess]]:
    import os

    started: list[WorkerProcess] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        full = {**os.environ, "SCALR_QUEUE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})}
        process = WorkerProcess([sys.executable, "-m", "scalr_queue.worker", *args], full, ROOT)
        started.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in started:
            process.stop()


def counted(admin: redis.Redis) -> list[str]:
    stats = admin.info("commandstats")
    return sorted(
        name.removeprefix("cmdstat_") for name in stats if name.removeprefix("cmdstat_") not in NOT_THE_ROLE
    )


async def role_commands(role: str) -> list[str]:
    with RedisServer(password=PASSWORD) as server, spawner() as spawn:
        admin = redis.Redis(port=server.port, password=PASSWORD, db=1)
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/1"
        queue = f"acl{uuid.uuid4().hex[:8]}"
        if role == "worker":
            ends = await prepare_worker_jobs(url, queue, admin)
            admin.config_resetstat()
            run_worker_role(spawn, url, queue, ends)
        else:
            finished = await prepare_finished_jobs(url, queue, spawn)
            fake_live_worker(admin, queue)
            admin.config_resetstat()
            if role == "producer":
                await run_producer_role(url, queue, finished)
            else:
                await asyncio.to_thread(run_cli_role, url, queue, finished)
        found = counted(admin)
        admin.close()
        return found


def main() -> None:
    for role in ("worker", "producer", "cli"):
        commands = asyncio.run(role_commands(role))
        print(f"{role}: {' '.join(commands)}", flush=True)


if __name__ == "__main__":
    main()
