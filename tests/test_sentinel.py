"""Redis Sentinel with real processes: a worker and producers follow a failover, and no acknowledged job is lost.

One primary, one replica and three sentinels run on loopback ports (tests/ha.py); a worker subprocess runs jobs
while the test enqueues through two clients: one returning once the primary has the job, one waiting for the
replica (``SCALR_QUEUE_WAIT_REPLICAS=1``). Replication is asynchronous, so only the second kind of
acknowledgement survives any failover; every job it acknowledged must finish on the new primary.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scalr_queue import Client, Job, NotReplicatedError, RedisUnavailableError
from scalr_queue.config import Settings, load_settings, reset_settings
from scalr_queue.exceptions import ConfigError
from scalr_queue.testing import make_tls_files
from tests.conftest import WorkerProcess, run_command
from tests.ha import SentinelGroup

CLI = str(Path(sys.executable).parent / "scalr-queue")
FOLLOW_S = 15  # generous bound on how soon a producer writes to the new primary once the sentinels name it


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path) as started:
        yield started


def sentinel_env(group: SentinelGroup, queue: str, **extra: str) -> dict[str, str]:
    """The environment of a process that finds Redis through the group's sentinels."""
    return {
        "REDIS_URL": "redis://mymaster/0",  # host unused: the sentinels name the primary
        "SCALR_QUEUE_SENTINELS": group.sentinel_setting,
        "SCALR_QUEUE_NAME": queue,
        **extra,
    }


@dataclass
class Producer:
    """Enqueues ``add(x=n, y=0)`` in a loop through a client that returns at once and one that waits for a replica."""

    fast: Client
    safe: Client
    acknowledged_safe: list[tuple[int, Job]] = field(default_factory=list)
    acknowledged_fast: list[tuple[float, Job]] = field(default_factory=list)
    refused: int = 0
    not_replicated: int = 0
    running: bool = True

    async def run(self) -> None:
        """Both clients enqueue side by side, so the one waiting for replicas never slows the other."""
        await asyncio.gather(self._loop(self.fast, 0), self._loop(self.safe, 1))

    async def _loop(self, client: Client, parity: int) -> None:
        n = parity
        while self.running:
            n += 2  # fast jobs get even numbers, safe ones odd: every job's result is its own
            try:
                job = await client.enqueue("add", x=n, y=0)
            except NotReplicatedError:
                self.not_replicated += 1
            except RedisUnavailableError:
                self.refused += 1
                await asyncio.sleep(0.05)
            else:
                assert job is not None
                if client is self.safe:
                    self.acknowledged_safe.append((n, job))
                else:
                    self.acknowledged_fast.append((time.monotonic(), job))
            await asyncio.sleep(0.005)

    def fast_since(self, moment: float) -> int:
        return sum(1 for at, _ in self.acknowledged_fast if at > moment)


async def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, producing: asyncio.Task[None]
) -> None:
    """Wait until ``condition`` holds while the producer runs; fail after ``timeout`` s (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if producing.done():
            producing.result()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


async def failover_under_load(
    group: SentinelGroup, queue: str, spawn: Callable[..., WorkerProcess], *, kill: bool
) -> Producer:
    """Fail the primary over (SIGKILL or SENTINEL FAILOVER) while a worker runs and the producer enqueues."""
    env = sentinel_env(group, queue, SCALR_QUEUE_LEASE="3", SCALR_QUEUE_CONCURRENCY="20")
    worker = spawn("tests.apps.basic", env=env)
    worker.wait_started()
    base = Settings(REDIS_URL=env["REDIS_URL"], sentinels=group.sentinel_setting, name=queue)  # type: ignore[call-arg]
    producer = Producer(Client(base), Client(base.model_copy(update={"wait_replicas": 1})))
    producing = asyncio.get_running_loop().create_task(producer.run())
    try:
        await wait_for(lambda: len(producer.acknowledged_safe) >= 50, 30, "50 replicated enqueues", producing)
        old = group.primary_port()
        if kill:
            assert group.primary.process is not None
            group.primary.process.kill()  # SIGKILL: no goodbye to the replica, the sentinels or the clients
            group.primary.process.wait()
        else:
            group.failover()
        new = await asyncio.to_thread(group.wait_for_new_primary, old, 30)
        switched = time.monotonic()
        assert new != old
        # Producers follow without a restart: enqueues land on the new primary within seconds.
        await wait_for(
            lambda: producer.fast_since(switched) >= 20, FOLLOW_S, "enqueues on the new primary", producing
        )
        if kill:
            group.primary.start()  # the old primary comes back empty; the sentinels make it the new replica
        before = len(producer.acknowledged_safe)
        await wait_for(
            lambda: len(producer.acknowledged_safe) >= before + 20, 60, "replicated enqueues again", producing
        )
    finally:
        producer.running = False
        await producing

    # The worker rode it out in the same process and ran every job the replica had acknowledged.
    assert worker.proc.poll() is None, worker.output
    for n, job in producer.acknowledged_safe:
        assert await job.result(timeout=60) == n, job
    late = await producer.fast.enqueue("add", x=40, y=2)
    assert late is not None
    assert await late.result(timeout=20) == 42

    # The CLI and the probe find the new primary through the same settings.
    stats = run_command(CLI, "stats", queue, env=env)
    assert stats.returncode == 0, stats.stderr
    assert queue in stats.stdout
    probe = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check", env=env)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    await producer.fast.close()
    await producer.safe.close()
    return producer


async def test_manual_failover_loses_no_replicated_job(
    group: SentinelGroup, queue: str, spawn: Callable[..., WorkerProcess]
) -> None:
    """After SENTINEL FAILOVER under load, worker and producers follow the new primary; no replicated job is lost."""
    producer = await failover_under_load(group, queue, spawn, kill=False)
    assert producer.not_replicated > 0  # the old primary kept taking writes that never reached a replica


async def test_killed_primary_loses_no_replicated_job(
    group: SentinelGroup, queue: str, spawn: Callable[..., WorkerProcess]
) -> None:
    """After a SIGKILL of the primary under load, worker and producers follow the promoted replica; none is lost."""
    producer = await failover_under_load(group, queue, spawn, kill=True)
    assert producer.refused > 0  # enqueues failed loudly while no primary was known


async def test_wait_replicas_without_a_replica_raises(monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    """With SCALR_QUEUE_WAIT_REPLICAS=1 and no replica, enqueue and enqueue_many raise NotReplicatedError naming the job."""
    monkeypatch.setenv("SCALR_QUEUE_WAIT_REPLICAS", "1")
    monkeypatch.setenv("SCALR_QUEUE_WAIT_TIMEOUT", "0.2")
    reset_settings()
    client = Client()
    with pytest.raises(NotReplicatedError, match=r"0 of 1 replica\(s\) confirmed it within 0.2 s") as caught:
        await client.enqueue("add", x=1, y=2, _job_id="wait-1")
    assert caught.value.job_ids == ["wait-1"]
    assert await client.job("wait-1").status() == "queued"  # it is on the primary all the same
    with pytest.raises(NotReplicatedError) as many:
        await client.enqueue_many([("add", {"x": 1, "y": 2}), ("add", {"x": 3, "y": 4, "_job_id": "wait-1"})])
    assert (
        len(many.value.job_ids) == 1
    )  # the duplicate id wrote nothing, so nothing of it waits for a replica
    await client.close()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SCALR_QUEUE_SENTINELS", "sentinel-1", "'sentinel-1' is not host:port"),
        ("SCALR_QUEUE_SENTINELS", "a:26379,:1", "':1' is not host:port"),
        ("SCALR_QUEUE_WAIT_TIMEOUT", "9", "must be below SCALR_QUEUE_REDIS_TIMEOUT"),
    ],
)
def test_bad_sentinel_and_wait_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A malformed sentinel list or a WAIT timeout above the Redis timeout is a ConfigError that says what to fix."""
    monkeypatch.setenv("SCALR_QUEUE_WAIT_REPLICAS", "1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_sentinels_need_a_tcp_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unix:// REDIS_URL with sentinels is refused: the sentinels name a host and port."""
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis.sock?db=0")
    monkeypatch.setenv("SCALR_QUEUE_SENTINELS", "127.0.0.1:26379")
    with pytest.raises(
        ConfigError, match="REDIS_URL must be redis:// or rediss:// with SCALR_QUEUE_SENTINELS"
    ):
        load_settings()


async def test_sentinels_and_primary_over_tls(
    tmp_path: Path, queue: str, spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With rediss://, sentinels and primary are reached over TLS with host names checked: a job runs; a wrong name is refused."""
    certified = make_tls_files(tmp_path / "tls", ["127.0.0.1"])
    with SentinelGroup(tmp_path, tls=certified) as tls_group:
        url = f"rediss://mymaster/0?ssl_ca_certs={certified.ca}"
        env = {**sentinel_env(tls_group, queue), "REDIS_URL": url}
        worker = spawn("tests.apps.basic", env=env)
        worker.wait_started()
        client = Client(Settings(REDIS_URL=url, sentinels=tls_group.sentinel_setting, name=queue))  # type: ignore[call-arg]
        job = await client.enqueue("add", x=1, y=2)
        assert job is not None
        assert await job.result(timeout=20) == 3
        await client.close()
        by_name = tls_group.sentinel_setting.replace(
            "127.0.0.1", "localhost"
        )  # the certificate names the IP only
        wrong = Client(Settings(REDIS_URL=url, sentinels=by_name, name=queue))  # type: ignore[call-arg]
        with pytest.raises(RedisUnavailableError, match="does not match the host name connected to"):
            await wrong.enqueue("add", x=1, y=2)
        await wrong.close()


async def test_sentinels_with_a_password(tmp_path: Path, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sentinels with requirepass are reached with SCALR_QUEUE_SENTINEL_PASSWORD; without it the error hides nothing."""
    with SentinelGroup(tmp_path, sentinel_password="sentinel-hush") as guarded:
        monkeypatch.setenv("REDIS_URL", "redis://mymaster/0")
        monkeypatch.setenv("SCALR_QUEUE_SENTINELS", guarded.sentinel_setting)
        reset_settings()
        without = Client()
        with pytest.raises(RedisUnavailableError, match="primary 'mymaster' from sentinels"):
            await without.enqueue("add", x=1, y=2)
        await without.close()
        monkeypatch.setenv("SCALR_QUEUE_SENTINEL_PASSWORD", "sentinel-hush")
        reset_settings()
        settings = load_settings()
        assert "sentinel-hush" not in repr(settings)
        client = Client(settings)
        assert await client.enqueue("add", x=1, y=2) is not None
        await client.close()


async def test_no_sentinel_answering_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every sentinel down, enqueue raises RedisUnavailableError naming the primary and the sentinels."""
    from scalr_queue.testing import free_port

    sentinels = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    monkeypatch.setenv("REDIS_URL", "redis://:hush-hush@mymaster/0")
    monkeypatch.setenv("SCALR_QUEUE_SENTINELS", sentinels)
    reset_settings()
    client = Client()
    with pytest.raises(
        RedisUnavailableError, match=f"primary 'mymaster' from sentinels {sentinels}"
    ) as caught:
        await client.enqueue("add", x=1, y=1)
    assert "hush-hush" not in str(caught.value)
    await client.close()
