"""The dashboard over HTTP, in process, against the real Redis: pages, corrupt data, actions, CSRF, read-only, mounting."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from redis.asyncio import Redis as AsyncRedis

from scalr_queue import enqueue, enqueue_many, keys, timeline
from scalr_queue.cli import cli
from scalr_queue.client import default_client
from scalr_queue.config import get_settings
from scalr_queue.dashboard import _listing, create_app
from scalr_queue.dashboard._auth import BasicAuth
from scalr_queue.failed import FailedJob, FailedStore, now_iso

PACKAGE = Path(__file__).resolve().parent.parent / "scalr_queue" / "dashboard"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client_for(app: object, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)  # type: ignore[arg-type]


@pytest.fixture
async def web() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app()) as client:
        yield client


def store() -> FailedStore:
    s = get_settings()
    return FailedStore(default_client().redis, max_age_s=s.failed_max_age, max_count=s.failed_max_count)


def failure(job_id: str, queue: str, task: str = "boom", message: str = "went wrong") -> FailedJob:
    return FailedJob(
        job_id=job_id,
        task=task,
        kwargs={"n": 1},
        queue=queue,
        tries=3,
        reason="raised",
        error_type="ValueError",
        message=message,
        traceback=f"Traceback (most recent call last):\nValueError: {message}\n",
        enqueued_at=now_iso(),
        failed_at=now_iso(),
        max_tries=3,
    )


async def token(web: httpx.AsyncClient, path: str = "/") -> str:
    page = await web.get(path)
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def test_overview_lists_each_queue_with_its_counts_and_chart(
    web: httpx.AsyncClient, queue: str
) -> None:
    """The overview shows ready, deferred, failed, paused and workers per queue; the queue page its last hour."""
    await enqueue("add", x=1, y=2)
    await enqueue("add", x=1, y=2, _defer_by=600)
    await store().record(failure("f-1", queue))
    await timeline.record(default_client().redis, queue, "succeeded", 7)
    await timeline.record(default_client().redis, queue, "failed", 2)
    page = await web.get("/")
    assert page.status_code == 200
    row = re.search(rf'<tr data-queue="{queue}">(.*?)</tr>', page.text, re.DOTALL)
    assert row, page.text
    numbers = re.findall(r'<td class="n[^"]*">(?:<a [^>]*>)?([\d,]+)', row.group(1))
    assert numbers == ["1", "1", "0", "1", "0"]  # ready, deferred, in progress, failed, workers
    assert "running" in row.group(1)
    assert "<svg" in page.text
    own = await web.get(f"/queues/{queue}")  # the overview's chart sums every queue: other tests' too
    assert "7 succeeded" in own.text
    assert "2 failed" in own.text


async def test_every_page_renders(web: httpx.AsyncClient, queue: str) -> None:
    """Each page and each job state answers 200 with real data in Redis."""
    job = await enqueue("add", x=1, y=2)
    assert job is not None
    await store().record(failure("f-2", queue))
    for path in [
        "/",
        f"/queues/{queue}",
        *(f"/queues/{queue}?state={s.value}" for s in _listing.State),
        f"/queues/{queue}?task=add",
        "/failed",
        f"/failed?queue={queue}&task=boom",
        f"/jobs/{job.job_id}",
        "/jobs/f-2",
        "/workers",
        "/static/dashboard.css",
        "/static/live.js",
    ]:
        response = await web.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_unknown_job_and_queue_are_404_pages(web: httpx.AsyncClient) -> None:
    """An id or queue Redis knows nothing of is a 404 page that says so, not an error."""
    missing = await web.get("/jobs/no-such-job")
    assert missing.status_code == 404
    assert "Redis holds nothing for job" in missing.text
    assert (await web.get("/queues/no-such-queue")).status_code == 404


async def test_search_opens_the_job_page(web: httpx.AsyncClient) -> None:
    """The job-id search redirects to that job's page, quoting the id."""
    response = await web.get("/search", params={"id": " a/b c "})
    assert response.status_code == 303
    assert response.headers["location"] == "/jobs/a%2Fb%20c"


async def test_job_page_shows_arguments_and_result(web: httpx.AsyncClient, queue: str, spawn) -> None:  # type: ignore[no-untyped-def]
    """A job run by a real worker shows its arguments, its result and a timeline."""
    spawn("tests.apps.basic").wait_started()
    job = await enqueue("add", x=20, y=22)
    assert job is not None
    assert await job.result(timeout=10) == 42
    page = await web.get(f"/jobs/{job.job_id}")
    assert 'data-state="complete"' in page.text
    assert "&#34;x&#34;: 20" in page.text or '"x": 20' in page.text
    assert "<h2>Result</h2>" in page.text
    assert "succeeded" in page.text


async def test_failed_job_page_shows_error_and_traceback(web: httpx.AsyncClient, queue: str) -> None:
    """A failure record's error type, message, reason and traceback are on its job page, escaped."""
    await store().record(failure("f-3", queue, message="<script>alert(1)</script>"))
    page = await web.get("/jobs/f-3")
    assert 'data-state="failed"' in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("job", b"\x80\x04pickle"),
        ("job", b"[1, 2]"),
        ("result", b"not json"),
        ("failed", b"{broken"),
        ("failed", b'{"job_id": "x", "tries": "many", "kwargs": [], "traceback": 7}'),
    ],
)
async def test_corrupt_records_render_as_corrupt(
    web: httpx.AsyncClient, redis: AsyncRedis, queue: str, key: str, value: bytes
) -> None:
    """A job, result or failure record that does not decode is shown as corrupt on every page, never a 500."""
    job_id = f"corrupt-{key}-{len(value)}"
    await redis.sadd(keys.QUEUES_KEY, queue)
    if key == "job":
        await redis.set(keys.job_key(job_id), value)
        await redis.zadd(keys.queue_key(queue), {job_id: time.time() * 1000})
    elif key == "result":
        await redis.set(keys.result_key(job_id), value)
        await redis.zadd(keys.completed_key(queue), {job_id: time.time() * 1000})
    else:
        await redis.set(keys.failed_key(job_id), value)
        await redis.zadd(keys.FAILED_KEY, {job_id: time.time() * 1000})
        await redis.zadd(keys.failed_queue_key(queue), {job_id: time.time() * 1000})
    for path in [
        "/",
        f"/queues/{queue}",
        f"/queues/{queue}?state=complete",
        f"/queues/{queue}?state=failed",
        f"/queues/{queue}?task=add",
        "/failed",
        f"/jobs/{job_id}",
    ]:
        response = await web.get(path)
        assert response.status_code == 200, (path, response.text)
    job_page = (await web.get(f"/jobs/{job_id}")).text
    if value.startswith(b'{"job_id"'):
        assert "many" not in job_page or "Tries" in job_page  # a wrong-typed field is left out, not a crash
    else:
        assert "Corrupt data in Redis" in job_page


async def test_corrupt_worker_and_timeline_records(
    web: httpx.AsyncClient, redis: AsyncRedis, queue: str
) -> None:
    """A garbled heartbeat record and non-numeric chart counts render as such."""
    await redis.sadd(keys.QUEUES_KEY, queue)
    await redis.zadd(keys.workers_key(queue), {"w-1": time.time() * 1000 + 60_000})
    await redis.set(keys.worker_key("w-1"), b"\xff\xfe")
    minute = timeline.minute_of(time.time())
    await redis.hset(
        keys.timeline_key(queue, minute), mapping={"succeeded": "lots", "failed": "3", "zzz": "9"}
    )
    workers = await web.get("/workers")
    assert workers.status_code == 200
    assert "heartbeat record missing or corrupt" in workers.text
    own = await web.get(f"/queues/{queue}")
    assert own.status_code == 200
    assert "0 succeeded" in own.text
    assert "3 failed" in own.text


async def test_hostile_names_are_escaped(web: httpx.AsyncClient, redis: AsyncRedis) -> None:
    """Queue names and job ids from Redis are escaped in HTML and quoted in links."""
    name = '<img src=x onerror="alert(1)">'
    await redis.sadd(keys.QUEUES_KEY, name)
    await redis.zadd(keys.queue_key(name), {'"><b>id': time.time() * 1000})
    page = await web.get("/")
    assert "<img src=x" not in page.text
    assert "&lt;img src=x" in page.text
    await redis.srem(keys.QUEUES_KEY, name)


async def test_queued_pages_cover_every_job_once(web: httpx.AsyncClient, queue: str) -> None:
    """Following "next page" from the first page lists every queued job exactly once."""
    jobs = await enqueue_many([("add", {"x": i, "y": 0}) for i in range(_listing.PAGE_SIZE * 2 + 7)])
    seen: list[str] = []
    path: str | None = f"/queues/{queue}?state=queued"
    while path:
        page = await web.get(path)
        seen += re.findall(r'<tr data-job="([^"]+)">', page.text)
        found = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        path = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(j.job_id for j in jobs if j)


async def test_task_filter_looks_at_a_bounded_number_of_jobs(
    web: httpx.AsyncClient, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filtered page stops after FILTER_BUDGET entries and offers to look further, where the rare job is."""
    monkeypatch.setattr(_listing, "FILTER_BUDGET", 40)
    await enqueue_many([("add", {"x": i, "y": 0}) for i in range(100)])
    rare = await enqueue("greet", name="rare")
    assert rare is not None
    first = await web.get(f"/queues/{queue}", params={"task": "greet"})
    assert rare.job_id not in first.text
    assert "look further" in first.text
    assert "40 looked at" in first.text
    path: str | None = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1)  # type: ignore[union-attr]
    found = False
    while path and not found:
        page = await web.get(path.replace("&amp;", "&"))
        found = rare.job_id in page.text
        more = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        path = more.group(1) if more else None
    assert found


async def test_complete_state_lists_the_recorded_completions(
    web: httpx.AsyncClient, queue: str, spawn
) -> None:  # type: ignore[no-untyped-def]
    """Jobs the worker records as completed (timeline.record with job ids) are listed newest first."""
    spawn("tests.apps.dashboard").wait_started()
    jobs = [await enqueue("add", x=i, y=1) for i in range(3)]
    for job in jobs:
        assert job is not None
        await job.result(timeout=10)
    redis = default_client().redis
    for _ in range(100):  # the hook records right after the result is written
        if await redis.zcard(keys.completed_key(queue)) == 3:
            break
        await _sleep(0.05)
    page = await web.get(f"/queues/{queue}", params={"state": "complete"})
    listed = re.findall(r'<tr data-job="([^"]+)">', page.text)
    assert sorted(listed) == sorted(j.job_id for j in jobs if j)


async def test_retry_and_forget_need_the_csrf_token(web: httpx.AsyncClient, queue: str) -> None:
    """Actions without the form's token are refused; with it, retry queues the job and forget drops the record."""
    await store().record(failure("f-4", queue, task="add"))
    await store().record(failure("f-5", queue, task="add"))
    refused = await web.post("/failed/retry", data={"job_id": "f-4"})
    assert refused.status_code == 403
    assert await store().get("f-4") is not None
    csrf = await token(web, "/failed")
    retried = await web.post("/failed/retry", data={"job_id": "f-4", "csrf": csrf, "back": "/failed"})
    assert retried.status_code == 303
    assert retried.headers["location"] == "/failed?done=retried&n=1"
    assert await store().get("f-4") is None
    assert await default_client().redis.zscore(keys.queue_key(queue), "f-4") is not None
    forgot = await web.post("/failed/forget", data={"job_id": "f-5", "csrf": csrf})
    assert forgot.status_code == 303
    assert await store().get("f-5") is None
    notice = await web.get("/failed?done=forgotten&n=1")
    assert "Forgot 1 failure record(s)." in notice.text


async def test_cross_origin_post_is_refused(web: httpx.AsyncClient, queue: str) -> None:
    """A POST whose Origin or Sec-Fetch-Site names another site is refused even with a token."""
    await store().record(failure("f-6", queue))
    csrf = await token(web)
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        response = await web.post("/failed/forget", data={"job_id": "f-6", "csrf": csrf}, headers=headers)
        assert response.status_code == 403
    assert await store().get("f-6") is not None


async def test_retry_all_matching_retries_only_that_task(web: httpx.AsyncClient, queue: str) -> None:
    """ "Retry all" with a task filter queues that task's failures again and leaves the others."""
    for i in range(3):
        await store().record(failure(f"a-{i}", queue, task="add"))
    await store().record(failure("b-0", queue, task="boom"))
    csrf = await token(web)
    response = await web.post("/failed/retry-all", data={"queue": queue, "task": "add", "csrf": csrf})
    assert response.status_code == 303
    assert "n=3" in response.headers["location"]
    assert await store().count(queue) == 1
    assert await store().get("b-0") is not None


async def test_pause_and_resume(web: httpx.AsyncClient, queue: str) -> None:
    """The pause and resume buttons set and clear the queue's pause flag, as the CLI does."""
    await enqueue("add", x=1, y=1)
    csrf = await token(web)
    paused = await web.post(f"/queues/{queue}/pause", data={"csrf": csrf})
    assert paused.status_code == 303
    assert await default_client().redis.exists(keys.paused_key(queue))
    assert "paused" in (await web.get(f"/queues/{queue}")).text
    await web.post(f"/queues/{queue}/resume", data={"csrf": csrf})
    assert not await default_client().redis.exists(keys.paused_key(queue))


async def test_read_only_hides_and_refuses_actions(queue: str) -> None:
    """A read-only dashboard shows no action buttons and refuses a posted action, token or not."""
    await enqueue("add", x=1, y=1)
    await store().record(failure("f-7", queue))
    async with client_for(create_app(read_only=True)) as web:
        for path in ("/", "/failed", "/jobs/f-7", f"/queues/{queue}?state=failed"):
            text = (await web.get(path)).text
            assert "data-action" not in text, path
            assert "read-only" in text
        csrf = web.cookies["scalr_queue_csrf"]  # the pages carry no form to take it from
        for path, data in [
            ("/failed/forget", {"job_id": "f-7"}),
            ("/failed/retry", {"job_id": "f-7"}),
            ("/failed/retry-all", {}),
            (f"/queues/{queue}/pause", {}),
        ]:
            response = await web.post(path, data={**data, "csrf": csrf})
            assert response.status_code == 403, path
    assert await store().get("f-7") is not None
    assert not await default_client().redis.exists(keys.paused_key(queue))


async def test_mounted_under_a_host_app(queue: str) -> None:
    """Mounted at /queues in a FastAPI app, links, assets, the cookie and redirects stay under /queues."""
    await enqueue("add", x=1, y=1)
    await store().record(failure("f-8", queue))
    host = FastAPI()
    host.mount("/queues", create_app())
    async with client_for(host) as web:
        page = await web.get("/queues/")
        assert page.status_code == 200
        assert 'href="/queues/static/dashboard.css"' in page.text
        assert f'href="/queues/queues/{queue}"' in page.text
        assert "Path=/queues" in page.headers["set-cookie"]
        assert 'href="/queues/" data-self' in page.text
        assert (await web.get("/queues/static/dashboard.css")).status_code == 200
        csrf = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        response = await web.post(
            "/queues/failed/forget", data={"job_id": "f-8", "csrf": csrf, "back": "/failed"}
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith("/queues/failed?")


async def test_basic_auth_guards_the_standalone_dashboard() -> None:
    """The standalone server's basic auth lets the right password in (any user) and nothing else."""
    async with client_for(BasicAuth(create_app(), "s3cret")) as web:
        assert (await web.get("/")).status_code == 401
        assert (await web.get("/", auth=("ops", "wrong"))).status_code == 401
        assert (await web.get("/", headers={"authorization": "Basic !!!"})).status_code == 401
        assert (await web.get("/", auth=("ops", "s3cret"))).status_code == 200


def test_dashboard_refuses_a_public_address_without_a_password() -> None:
    """`scalr-queue dashboard --host 0.0.0.0` without SCALR_QUEUE_DASHBOARD_PASSWORD exits with an error."""
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "SCALR_QUEUE_DASHBOARD_PASSWORD" in result.output


def test_assets_ship_in_the_package_and_load_nothing_from_outside() -> None:
    """Templates and static files name no external URL: no CDN, fonts or scripts from the internet."""
    files = [*PACKAGE.glob("templates/*.html"), *PACKAGE.glob("static/*")]
    assert len(files) >= 8
    for path in files:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path


async def test_redis_down_is_a_503_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Redis unreachable the page says so, with a 503, within the Redis timeout."""
    from scalr_queue.testing import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("SCALR_QUEUE_REDIS_TIMEOUT", "1")
    from scalr_queue.config import reset_settings

    reset_settings()
    async with client_for(create_app()) as web:
        response = await web.get("/")
    assert response.status_code == 503
    assert "Redis is unavailable" in response.text


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_without_the_extra_the_error_names_the_pip_command() -> None:
    """Importing the dashboard without Jinja2 raises MissingExtraError with the pip command."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jinja2'] = None\n"
        "from scalr_queue.exceptions import MissingExtraError\n"
        "try:\n    import scalr_queue.dashboard\nexcept MissingExtraError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'scalr_queue[dashboard]'" in out


async def test_aborted_tab_lists_only_aborted_failures(web: httpx.AsyncClient, queue: str) -> None:
    """The queue page's "aborted" tab picks the failure records of reason ``aborted`` out of the failed store."""
    await enqueue("add", x=1, y=2)  # the queue exists
    aborted = dataclasses.replace(failure("ab-1", queue), reason="aborted", error_type="CancelledError")
    await store().record(aborted)
    await store().record(failure("f-9", queue))
    page = await web.get(f"/queues/{queue}?state=aborted")
    assert page.status_code == 200
    assert 'data-job="ab-1"' in page.text
    assert 'data-job="f-9"' not in page.text
    everything = await web.get(f"/queues/{queue}?state=failed")
    assert 'data-job="ab-1"' in everything.text and 'data-job="f-9"' in everything.text
