"""Settings: DESIGN §3 defaults, a start-up error naming the variable, every REDIS_URL form, no password leaks."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

import scalr_queue
from scalr_queue import ConfigError, RedisUnavailableError, enqueue
from scalr_queue.config import Settings, load_settings, redact_url, reset_settings
from scalr_queue.connection import create_redis
from scalr_queue.testing import RedisServer
from scalr_queue.worker import serve


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set: localhost Redis, queue default, 10 at once, 300 s, 5 tries, redis mode, auto logs."""
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("SCALR_QUEUE_NAME")
    settings = load_settings()
    assert settings.redis_url == "redis://localhost:6379/0"
    assert (settings.name, settings.concurrency, settings.job_timeout, settings.max_tries) == (
        "default",
        10,
        300,
        5,
    )
    assert (settings.mode, settings.tasks, settings.log_format) == ("redis", None, "auto")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SCALR_QUEUE_CONCURRENCY", "ten"),
        ("SCALR_QUEUE_CONCURRENCY", "0"),
        ("SCALR_QUEUE_JOB_TIMEOUT", "-1"),
        ("SCALR_QUEUE_MAX_TRIES", "0"),
        ("SCALR_QUEUE_MODE", "eager"),
        ("SCALR_QUEUE_LOG_FORMAT", "xml"),
        ("SCALR_QUEUE_NAME", "has space"),
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "redis://localhost:notaport/0"),
        ("REDIS_URL", "redis://localhost:6379/zero"),
        ("REDIS_URL", "unix://"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """A bad value is never replaced by a default: the error names the variable and the value."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}=") as caught:
        load_settings()
    assert repr(value) in str(caught.value)


def test_password_never_in_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_URL error shows the URL with its password masked."""
    monkeypatch.setenv("REDIS_URL", "http://admin:topsecret@redis:6379/0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "topsecret" not in str(caught.value)
    assert "admin:***@redis" in str(caught.value)


def test_redact_url() -> None:
    """Only the password is masked; user, host, port and database stay readable."""
    assert redact_url("redis://user:pw@host:1/2") == "redis://user:***@host:1/2"
    assert redact_url("rediss://:pw@host/0") == "rediss://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.parametrize(
    ("url", "connection_class", "expected"),
    [
        (
            "redis://app:pw@cache:6380/2",
            None,
            {"username": "app", "password": "pw", "host": "cache", "port": 6380, "db": 2},
        ),
        (
            "rediss://app:pw@cache:6380/0",
            SSLConnection,
            {"username": "app", "password": "pw", "host": "cache"},
        ),
        (
            "unix://app:pw@/run/redis.sock?db=3",
            UnixDomainSocketConnection,
            {"path": "/run/redis.sock", "db": 3, "password": "pw"},
        ),
    ],
)
def test_redis_url_forms_reach_the_pool(
    url: str, connection_class: type | None, expected: dict[str, object]
) -> None:
    """redis://, rediss:// and unix:// with user and password all configure the connection pool."""
    redis = create_redis(Settings(REDIS_URL=url))  # type: ignore[call-arg]
    pool = redis.connection_pool
    if connection_class is not None:
        assert pool.connection_class is connection_class
    for key, value in expected.items():
        assert pool.connection_kwargs[key] == value


async def test_unix_socket_with_password_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real Redis on a unix socket with a password: enqueue and a worker both work over unix://."""
    with RedisServer(password="sock-pw", unix_socket=True) as server:
        monkeypatch.setenv("REDIS_URL", server.unix_url)
        reset_settings()
        await scalr_queue.close()
        job = await enqueue("add", x=40, y=2)
        assert job is not None
        await serve("tests.apps.basic", burst=True, handle_signals=False)
        assert await job.result(timeout=5) == 42
        await scalr_queue.close()


async def test_wrong_password_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused password is a RedisUnavailableError that points at the credentials, without echoing them."""
    with RedisServer(password="right") as server:
        monkeypatch.setenv("REDIS_URL", f"redis://:wrong-one@127.0.0.1:{server.port}/0")
        reset_settings()
        await scalr_queue.close()
        with pytest.raises(RedisUnavailableError, match="refused the credentials") as caught:
            await enqueue("add", x=1, y=1)
        assert "wrong-one" not in str(caught.value)
        assert "check the user and password in REDIS_URL" in str(caught.value)
        await scalr_queue.close()
