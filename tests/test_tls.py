"""rediss:// against a real TLS redis-server: the certificate must name the host, in every process that connects.

redis-py does not check host names by default, so a certificate for another host, signed by a trusted CA, would
pass. scalr_queue checks them: the producer, the worker, the CLI and the probe all connect through
``connection.create_redis``, and each is tried here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import scalr_queue
from scalr_queue import ConfigError, RedisUnavailableError, enqueue
from scalr_queue.config import load_settings, reset_settings
from scalr_queue.testing import RedisServer, make_tls_files
from tests.conftest import WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")
MISMATCH = "does not match the host name connected to"
OPT_OUT = "ssl_check_hostname=false"


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer, Path]]:
    """Two TLS servers signed by one test CA: one certified for localhost/127.0.0.1, one for another host."""
    directory = tmp_path_factory.mktemp("tls")
    own = make_tls_files(directory, ["localhost", "127.0.0.1"], stem="own")
    other = make_tls_files(directory, ["redis.other.example"], stem="other")
    with RedisServer(tls=own) as good, RedisServer(tls=other) as wrong:
        yield good, wrong, own.ca


def _use(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()


async def _every_process_works(url: str, spawn: Callable[..., WorkerProcess]) -> None:
    """Enqueue, a worker subprocess running the job, the CLI and the probe all work with ``url``."""
    await scalr_queue.close()
    job = await enqueue("add", x=2, y=3)
    assert job is not None
    worker = spawn("tests.apps.basic", env={"REDIS_URL": url})
    worker.wait_started()
    assert await job.result(timeout=20) == 5
    stats = run_command(CLI, "stats", "--redis-url", url)
    assert stats.returncode == 0, stats.stderr
    probe = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.startswith("healthy"), probe.stdout
    worker.stop()
    await scalr_queue.close()


async def test_a_certificate_for_another_host_is_refused_everywhere(
    tls_servers: tuple[RedisServer, RedisServer, Path],
    spawn: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trusted certificate that names another host is refused by enqueue, worker, CLI and probe, each saying how to opt out."""
    _, wrong, ca = tls_servers
    url = f"rediss://127.0.0.1:{wrong.port}/0?ssl_ca_certs={ca}"
    _use(monkeypatch, url)
    await scalr_queue.close()

    with pytest.raises(RedisUnavailableError) as caught:
        await enqueue("add", x=1, y=1)
    assert MISMATCH in str(caught.value) and OPT_OUT in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    await scalr_queue.close()

    worker = spawn("tests.apps.basic", env={"REDIS_URL": url})
    assert worker.wait(timeout=30) == 1
    assert MISMATCH in worker.output and OPT_OUT in worker.output, worker.output
    assert "Traceback" not in worker.output

    stats = run_command(CLI, "stats", "--redis-url", url)
    assert stats.returncode == 1
    assert stats.stderr.startswith("error: Redis at rediss://127.0.0.1"), stats.stderr
    assert MISMATCH in stats.stderr and len(stats.stderr.strip().splitlines()) == 1

    probe = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check")
    assert probe.returncode == 1
    assert probe.stdout.startswith("unhealthy: Redis at") and MISMATCH in probe.stdout, probe.stdout


async def test_a_certificate_for_the_host_works_everywhere(
    tls_servers: tuple[RedisServer, RedisServer, Path],
    spawn: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A certificate naming the host connected to (a name or an IP) passes the check in every process."""
    good, _, ca = tls_servers
    for host in ("localhost", "127.0.0.1"):
        url = f"rediss://{host}:{good.port}/0?ssl_ca_certs={ca}"
        _use(monkeypatch, url)
        await _every_process_works(url, spawn)


async def test_ssl_check_hostname_false_opts_out(
    tls_servers: tuple[RedisServer, RedisServer, Path],
    spawn: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ?ssl_check_hostname=false in the URL, the other host's certificate is accepted everywhere."""
    _, wrong, ca = tls_servers
    url = f"rediss://127.0.0.1:{wrong.port}/0?ssl_ca_certs={ca}&ssl_check_hostname=false"
    _use(monkeypatch, url)
    await _every_process_works(url, spawn)


async def test_an_unknown_ca_says_where_to_name_it(
    tls_servers: tuple[RedisServer, RedisServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A certificate from a CA the client does not trust is an error that points at ?ssl_ca_certs=."""
    good, _, _ = tls_servers
    _use(monkeypatch, f"rediss://localhost:{good.port}/0")
    await scalr_queue.close()
    with pytest.raises(RedisUnavailableError, match=r"could not be verified .*\?ssl_ca_certs="):
        await enqueue("add", x=1, y=1)
    await scalr_queue.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("ssl_check_hostname=maybe", "ssl_check_hostname must be true or false"),
        ("ssl_cert_reqs=sometimes", "ssl_cert_reqs must be none, optional or required"),
    ],
)
def test_a_bad_tls_option_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, query: str, message: str
) -> None:
    """A TLS option redis-py would misread (or reject at connect time) stops start-up, naming REDIS_URL."""
    monkeypatch.setenv("REDIS_URL", f"rediss://:pw@cache:6380/0?{query}")
    with pytest.raises(ConfigError, match=f"^REDIS_URL=.* is not valid: {message}") as caught:
        load_settings()
    assert ":***@cache" in str(caught.value)
