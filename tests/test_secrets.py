"""A Redis password never appears in what scalr_queue prints: settings errors, connection errors, worker logs.

A real Redis with ``--requirepass`` and an ACL user, both with passwords holding ``#`` and ``/``, is reached with
the password written every way redis-py reads one: in the URL's user information (percent-encoded), as a lone
user-information component, and as ``?password=``. Each path that prints a URL is checked: ConfigError, the
errors of enqueue, of a worker subprocess, of the CLI and of the probe, and the worker's ``worker_started`` event.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

import scalr_queue
from scalr_queue import ConfigError, RedisUnavailableError, enqueue
from scalr_queue.config import load_settings, redact_url, reset_settings
from scalr_queue.testing import RedisServer
from tests.conftest import WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")
# Each password is made of marker words joined by characters that break a URL; no marker may ever be printed.
ADMIN_PW = "alpha7#bravo8/charlie9"
APP_PW = "delta4@echo5?foxtrot6"
WRONG_PW = "golf1#hotel2/india3"
MARKERS = ("alpha7", "bravo8", "charlie9", "delta4", "echo5", "foxtrot6", "golf1", "hotel2", "india3")


def leaks(text: str) -> list[str]:
    """The password markers found in ``text``."""
    return [marker for marker in MARKERS if marker in text]


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisServer]:
    """A Redis whose default user needs ADMIN_PW, with an ACL user ``app`` whose password is APP_PW."""
    with RedisServer(password=ADMIN_PW) as server:
        admin = redis.Redis(port=server.port, password=ADMIN_PW)
        admin.acl_setuser("app", enabled=True, passwords=[f"+{APP_PW}"], keys=["*"], commands=["+@all"])
        admin.close()
        yield server


def url_forms(port: int, password: str, user: str = "") -> dict[str, str]:
    """The ways to write a password in REDIS_URL that redis-py reads."""
    base = f"127.0.0.1:{port}/0"
    forms = {
        "userinfo": f"redis://{user}:{quote(password, safe='')}@{base}",
        "query": f"redis://{base}?password={quote(password, safe='')}"
        + (f"&username={user}" if user else ""),
    }
    if not user:
        forms["lone-userinfo"] = f"redis://{quote(password, safe='')}@{base}"  # sent as a user name
    return forms


def test_redact_url_hides_every_form_of_a_password() -> None:
    """Userinfo up to the last @, a lone userinfo component, password= values and broken URLs are all masked."""
    cases = {
        "redis://app:pw@host:6379/0": "redis://app:***@host:6379/0",
        "redis://:golf1#hotel2/india3@host:6379/0": "redis://:***@host:6379/0",
        "redis://app:golf1@hotel2@host/0": "redis://app:***@host/0",
        "redis://golf1@host/0": "redis://***@host/0",
        "redis://host/0?db=1&password=golf1#hotel2&x=1": "redis://host/0?db=1&password=***&x=1",
        "rediss://host/0?ssl_password=golf1": "rediss://host/0?ssl_password=***",
        "unix://:golf1@/run/redis.sock?db=0": "unix://:***@/run/redis.sock?db=0",
        "not a url golf1@host": "***@host",
        "redis://host:6379/0": "redis://host:6379/0",
    }
    for url, shown in cases.items():
        assert redact_url(url) == shown
        assert not leaks(redact_url(url))


@pytest.mark.parametrize("password", [ADMIN_PW, APP_PW, "golf1?hotel2"])
def test_settings_error_for_an_unencoded_password_hides_it(
    password: str, monkeypatch: pytest.MonkeyPatch, secured: RedisServer
) -> None:
    """A password with an unencoded # / ? or @ makes REDIS_URL invalid; the error hides it and says to encode it."""
    url = f"redis://app:{password}@127.0.0.1:{secured.port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()
    with pytest.raises(ConfigError, match="must be percent-encoded") as caught:
        load_settings()
    assert not leaks(str(caught.value)), str(caught.value)
    for result in (
        run_command(CLI, "stats", "--redis-url", url),
        run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", env={"REDIS_URL": url}),
        run_command(
            sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check", env={"REDIS_URL": url}
        ),
    ):
        assert result.returncode == 1
        assert not leaks(result.stdout + result.stderr), result.stdout + result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("form", ["userinfo", "query", "lone-userinfo", "acl-userinfo", "acl-query"])
async def test_refused_credentials_never_show_the_password(
    form: str, secured: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password, however written, is refused by enqueue, worker, CLI and probe without being printed."""
    forms = {**url_forms(secured.port, WRONG_PW), **{
        f"acl-{name}": url for name, url in url_forms(secured.port, WRONG_PW, user="app").items()
    }}  # fmt: skip
    url = forms[form]
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()
    await scalr_queue.close()
    with pytest.raises(RedisUnavailableError, match="refused the credentials") as caught:
        await enqueue("add", x=1, y=1)
    assert not leaks(str(caught.value)), str(caught.value)
    await scalr_queue.close()
    worker = run_command(
        sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", env={"REDIS_URL": url}
    )
    cli = run_command(CLI, "stats", "--redis-url", url)
    probe = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check")
    for result in (worker, cli, probe):
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "refused the credentials" in output, output
        assert not leaks(output), output
        assert "Traceback" not in output


@pytest.mark.parametrize("form", ["userinfo", "query", "acl-userinfo", "acl-query"])
async def test_worker_started_logs_the_url_without_the_password(
    form: str, secured: RedisServer, spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker connected with a password in any form logs worker_started with the URL masked, and runs jobs."""
    forms = {**url_forms(secured.port, ADMIN_PW), **{
        f"acl-{name}": url for name, url in url_forms(secured.port, APP_PW, user="app").items()
    }}  # fmt: skip
    url = forms[form]
    monkeypatch.setenv("REDIS_URL", url)
    reset_settings()
    await scalr_queue.close()
    job = await enqueue("add", x=20, y=22)
    assert job is not None
    worker = spawn("tests.apps.basic", env={"REDIS_URL": url})
    started = worker.wait_started()
    assert await job.result(timeout=20) == 42
    assert "***" in started["redis_url"], started
    worker.stop()
    assert not leaks(worker.output), worker.output
    await scalr_queue.close()
