"""Each role works under exactly the Redis ACL docs/security.md gives it, on a real Redis, and needs nothing more.

The ``ACL SETUSER`` lines are read from the page itself, so the documentation is what is tested. Each role runs
every path it takes (tests/roles.py) as its user, on database 1; afterwards ``ACL LOG`` must hold no refusal but the
worker's optional ``INFO``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator

import pytest
import redis

from scalr_queue.client import Client
from scalr_queue.config import load_settings
from scalr_queue.testing import RedisServer
from tests.conftest import ROOT, WorkerProcess
from tests.roles import (
    WORKER_APP,
    fake_live_worker,
    prepare_finished_jobs,
    prepare_worker_jobs,
    role_url,
    run_cli_role,
    run_producer_role,
    run_worker_role,
)

ADMIN_PW = "acl-admin"
PAGE = ROOT / "docs" / "security.md"
USERS = {"worker": "scalr-worker", "producer": "scalr-producer", "cli": "scalr-operator"}
TOLERATED = {
    "scalr-worker": {"info"}
}  # the version and the eviction check, skipped without INFO (see the page)


def documented_acl() -> dict[str, list[str]]:
    """The arguments of each ``redis-cli ACL SETUSER`` line on the page, by user name."""
    found = {}
    for line in PAGE.read_text().splitlines():
        if line.startswith("redis-cli ACL SETUSER "):
            args = shlex.split(line)[1:]
            found[args[2]] = args
    return found


def password_of(args: list[str]) -> str:
    return next(a[1:] for a in args if a.startswith(">"))


@pytest.fixture
def acl_server() -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A Redis whose default user needs a password, with the page's users created and ACL LOG empty."""
    with RedisServer(password=ADMIN_PW) as server:
        admin = redis.Redis(port=server.port, password=ADMIN_PW, db=1, decode_responses=True)
        for args in documented_acl().values():
            assert admin.execute_command(*args) == "OK"
        admin.execute_command("ACL", "LOG", "RESET")
        yield server, admin
        admin.close()


def role_login(server: RedisServer, role: str) -> str:
    user = USERS[role]
    return role_url(server.port, user, password_of(documented_acl()[user]))


def refusals(admin: redis.Redis, user: str) -> set[str]:
    """What ``ACL LOG`` says this user was refused (commands, keys), beyond what is tolerated."""
    entries = admin.execute_command("ACL", "LOG")
    refused = set()
    for entry in entries:
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=False))
        if fields["username"] == user:
            refused.add(f"{fields['reason']}:{fields['object']}")
    return {r for r in refused if r.split(":", 1)[1] not in TOLERATED.get(user, set())}


def test_the_page_has_a_user_per_role() -> None:
    """docs/security.md gives one ACL SETUSER line per role, each limited to arq:* keys and no channels."""
    acl = documented_acl()
    assert set(acl) == set(USERS.values())
    for args in acl.values():
        assert "~arq:*" in args and "resetchannels" in args and "-@all" in args


async def test_worker_runs_under_its_acl(
    acl_server: tuple[RedisServer, redis.Redis], spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """A worker subprocess (and its healthcheck) takes every path as scalr-worker without one refusal."""
    server, admin = acl_server
    ends = await prepare_worker_jobs(f"redis://:{ADMIN_PW}@127.0.0.1:{server.port}/1", queue, admin)
    admin.execute_command("ACL", "LOG", "RESET")
    worker = run_worker_role(spawn, role_login(server, "worker"), queue, ends)
    assert "NoPermissionError" not in worker.output and "can't run this command" not in worker.output
    assert refusals(admin, "scalr-worker") == set()


async def test_producer_runs_under_its_acl(
    acl_server: tuple[RedisServer, redis.Redis], spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """enqueue, enqueue_many (with WAIT), job status, info and results, and readiness work as scalr-producer."""
    server, admin = acl_server
    finished = await prepare_finished_jobs(f"redis://:{ADMIN_PW}@127.0.0.1:{server.port}/1", queue, spawn)
    admin.execute_command("ACL", "LOG", "RESET")
    await run_producer_role(role_login(server, "producer"), queue, finished)
    assert refusals(admin, "scalr-producer") == set()


async def test_cli_runs_under_its_acl(
    acl_server: tuple[RedisServer, redis.Redis], spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """Every scalr-queue command succeeds as scalr-operator without one refusal."""
    server, admin = acl_server
    finished = await prepare_finished_jobs(f"redis://:{ADMIN_PW}@127.0.0.1:{server.port}/1", queue, spawn)
    fake_live_worker(admin, queue)
    admin.execute_command("ACL", "LOG", "RESET")
    run_cli_role(role_login(server, "cli"), queue, finished)
    assert refusals(admin, "scalr-operator") == set()


async def test_a_worker_without_info_works(
    acl_server: tuple[RedisServer, redis.Redis], spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """A worker whose user may not run INFO (it is @dangerous) starts, learns the version from HELLO, runs jobs and
    prints no traceback; only its eviction check is skipped."""
    server, admin = acl_server
    admin.execute_command("ACL", "SETUSER", "scalr-worker", "-info")
    worker = spawn(WORKER_APP, env={"REDIS_URL": role_login(server, "worker"), "SCALR_QUEUE_NAME": queue})
    started = worker.wait_started()
    assert started["redis_version"]
    producer = Client(load_settings(REDIS_URL=f"redis://:{ADMIN_PW}@127.0.0.1:{server.port}/1", name=queue))
    try:
        job = await producer.enqueue("add", x=2, y=3)
        assert job is not None
        assert await job.result(timeout=10) == 5
    finally:
        await producer.close()
    assert "Traceback" not in worker.output
    assert "worker-secret" not in worker.output


def test_roles_cannot_reach_beyond_arq_keys(acl_server: tuple[RedisServer, redis.Redis]) -> None:
    """Each role is refused keys outside arq:*, KEYS, FLUSHALL and CONFIG."""
    server, _ = acl_server
    for role in USERS:
        client = redis.Redis.from_url(role_login(server, role))
        for command in (
            ("GET", "sessions:1"),
            ("KEYS", "*"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "requirepass"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        client.close()
