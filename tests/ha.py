"""A Redis Sentinel group of real processes on free loopback ports: one primary, one replica, three sentinels."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis

from scalr_queue.testing import RedisServer, TlsFiles, find_redis_server, free_port

MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # a primary that does not answer for this long is down (Sentinel's default is 30 s)


def connect(port: int, tls: TlsFiles | None = None) -> redis.Redis:
    """An admin client for a test server, over TLS when it speaks only TLS (the certificate checked, not the name)."""
    if tls is None:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    return redis.Redis(
        port=port,
        socket_timeout=2,
        decode_responses=True,
        ssl=True,
        ssl_ca_certs=str(tls.ca),
        ssl_check_hostname=False,
    )


def tls_args(tls: TlsFiles) -> str:
    """Configuration lines for a server or sentinel that speaks TLS only, to clients and to each other."""
    return (
        f"tls-cert-file {tls.cert}\ntls-key-file {tls.key}\ntls-ca-cert-file {tls.ca}\n"
        "tls-auth-clients no\ntls-replication yes\n"
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class SentinelServer:
    """``redis-server sentinel.conf --sentinel`` watching one primary."""

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        quorum: int = 2,
        tls: TlsFiles | None = None,
        password: str | None = None,
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.tls = tls
        self.password = password
        self.config = directory / f"sentinel-{self.port}.conf"
        ports = f"port 0\ntls-port {self.port}\n{tls_args(tls)}" if tls else f"port {self.port}\n"
        self.config.write_text(
            f"{ports}bind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
            + (f"requirepass {password}\nsentinel sentinel-pass {password}\n" if password else "")
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelServer:
        log = (self.directory / f"sentinel-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [find_redis_server(), str(self.config), "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_until(self._answers, 10, f"sentinel on port {self.port} answers")
        return self

    def client(self) -> redis.Redis:
        client = connect(self.port, self.tls)
        if self.password:
            client.connection_pool.connection_kwargs["password"] = self.password
        return client

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class SentinelGroup:
    """One primary, one replica, three sentinels (quorum 2), ready when every sentinel sees all the others."""

    def __init__(
        self,
        directory: Path,
        *,
        server_args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.sentinel_password = sentinel_password
        self.server_args = (*server_args, "--tls-replication", "yes") if tls else server_args
        self.primary = RedisServer(extra_args=self.server_args, tls=tls)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []

    @property
    def sentinel_setting(self) -> str:
        """The value of SCALR_QUEUE_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica = RedisServer(
            extra_args=("--replicaof", "127.0.0.1", str(self.primary.port), *self.server_args), tls=self.tls
        ).start()
        wait_until(lambda: self._role(self.replica) == "slave:up", 15, "the replica is in sync")
        self.sentinels = [
            SentinelServer(
                self.directory, self.primary.port, tls=self.tls, password=self.sentinel_password
            ).start()
            for _ in range(3)
        ]
        wait_until(self._settled, 30, "every sentinel sees the replica and the two other sentinels")
        return self

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(MASTER)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def _role(self, server: RedisServer | None) -> str:
        if server is None or server.process is None:
            return "down"
        try:
            with connect(server.port, self.tls) as client:
                info = client.info("replication")
        except redis.RedisError:
            return "down"
        if info["role"] == "master":
            return "master"
        return f"slave:{info.get('master_link_status')}"

    def primary_port(self) -> int:
        """The primary's port as the first answering sentinel reports it."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    _, port = client.sentinel_get_master_addr_by_name(MASTER)
                return int(port)
            except redis.ConnectionError:
                continue
        raise AssertionError("no sentinel answers")

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in (self.primary, self.replica) if s is not None and s.port == port)

    def failover(self) -> None:
        """A manual failover (``SENTINEL FAILOVER``): the replica is promoted, the primary demoted."""
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", MASTER)

    def wait_for_new_primary(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every sentinel names another server, and that server is a primary; its port."""

        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                if sentinel.process is None:
                    continue
                with sentinel.client() as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(MASTER)[1]))
            return (
                len(ports) == 1
                and old_port not in ports
                and self._role(self.server_on(ports.pop())) == "master"
            )

        wait_until(moved, timeout, "the sentinels promote the replica")
        return self.primary_port()

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in (self.primary, self.replica):
            if server is not None:
                server.close()

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
