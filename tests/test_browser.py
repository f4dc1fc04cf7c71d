"""The dashboard in real headless Chromium, served by `scalr-queue dashboard`, against a real worker process."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import AsyncIterator, Callable

import pytest
from playwright.async_api import Page, expect

from scalr_queue import enqueue, keys
from scalr_queue.client import default_client
from scalr_queue.testing import free_port
from tests.browser import chromium, chromium_path
from tests.conftest import WorkerProcess

WAIT_MS = 20_000

if chromium_path() is None:
    if os.environ.get("CI"):
        raise RuntimeError("the browser tests need Chromium: apt-get install -y chromium")
    pytest.skip("no Chromium on this machine (apt-get install -y chromium)", allow_module_level=True)


def serve_dashboard(spawn: Callable[..., WorkerProcess], *args: str) -> str:
    """`scalr-queue dashboard` on a free port, answering; returns its base URL."""
    port = free_port()
    spawn("dashboard", "--port", str(port), *args, module="scalr_queue.cli._main")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/", timeout=2):
                return base
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with chromium() as browser:
        context = await browser.new_context()
        yield await context.new_page()
        await context.close()


async def test_overview_and_a_job_moving_to_complete(
    queue: str, spawn: Callable[..., WorkerProcess], page: Page
) -> None:
    """The overview lists the queue; a running job's page, with live refresh on, turns to complete by itself."""
    spawn("tests.apps.dashboard").wait_started()
    base = serve_dashboard(spawn)
    job = await enqueue("sleep", seconds=1.5)
    assert job is not None
    await page.goto(base + "/")
    row = page.locator(f'tr[data-queue="{queue}"]')
    await expect(row).to_be_visible()
    await expect(row.locator("td").nth(5)).to_have_text("1")  # one live worker
    await page.goto(f"{base}/jobs/{job.job_id}")
    await expect(page.locator("[data-state]")).to_have_attribute("data-state", "in_progress", timeout=WAIT_MS)
    await page.check("#live-toggle")
    await expect(page.locator("[data-state]")).to_have_attribute("data-state", "complete", timeout=WAIT_MS)
    await expect(page.locator("h2", has_text="Result")).to_be_visible()


async def test_failed_job_traceback_then_retry_runs_it(
    queue: str, spawn: Callable[..., WorkerProcess], page: Page
) -> None:
    """A failed job's traceback is one click from the failed list; after the fix, Retry runs it to success."""
    spawn("tests.apps.dashboard").wait_started()
    base = serve_dashboard(spawn)
    flag = f"flag:{queue}"
    redis = default_client().redis
    await redis.set(flag, "1")
    job = await enqueue("fails_while_flag", flag=flag)
    assert job is not None
    await page.goto(f"{base}/failed?queue={queue}")
    link = page.get_by_role("link", name=job.job_id)
    for _ in range(100):  # the job fails within moments; the list is read when the page loads
        if await link.count():
            break
        time.sleep(0.1)
        await page.reload()
    await link.click()
    await expect(page.locator(".traceback")).to_contain_text(f"RuntimeError: {flag} is set")
    await redis.delete(flag)  # the fix is deployed
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator(".notice")).to_have_text("Queued 1 failed job(s) again.")
    assert await job.result(timeout=10) == "fixed"
    await page.goto(f"{base}/jobs/{job.job_id}")
    await expect(page.locator("[data-state]")).to_have_attribute("data-state", "complete")


async def test_pause_and_resume_a_queue(queue: str, spawn: Callable[..., WorkerProcess], page: Page) -> None:
    """Pause keeps the worker from taking a new job; Resume lets it run."""
    spawn("tests.apps.dashboard").wait_started()
    base = serve_dashboard(spawn)
    first = await enqueue("add", x=1, y=1)
    assert first is not None
    await first.result(timeout=10)
    await page.goto(base + "/")
    row = page.locator(f'tr[data-queue="{queue}"]')
    await row.get_by_role("button", name="Pause").click()
    await expect(page.locator(".notice")).to_contain_text(f"Paused queue {queue}")
    await expect(row.locator(".badge")).to_have_text("paused")
    assert await default_client().redis.exists(keys.paused_key(queue))
    waiting = await enqueue("add", x=2, y=2)
    assert waiting is not None
    time.sleep(1.5)
    assert await waiting.status() == "queued"
    await row.get_by_role("button", name="Resume").click()
    await expect(row.locator(".badge")).to_have_text("running")
    assert await waiting.result(timeout=10) == 4


async def test_works_without_javascript(queue: str, spawn: Callable[..., WorkerProcess]) -> None:
    """With JavaScript off every page reads the same and the actions still work (plain form posts)."""
    base = serve_dashboard(spawn)
    await enqueue("add", x=1, y=1)
    async with chromium() as browser:
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        await page.goto(base + "/")
        await expect(page.locator(".live")).to_be_hidden()
        row = page.locator(f'tr[data-queue="{queue}"]')
        await row.get_by_role("button", name="Pause").click()
        await expect(row.locator(".badge")).to_have_text("paused")
        for path in ("/failed", "/workers", f"/queues/{queue}", f"/queues/{queue}?state=deferred"):
            response = await page.goto(base + path)
            assert response is not None and response.status == 200, path
        await context.close()


async def test_read_only_server_shows_no_buttons(
    queue: str, spawn: Callable[..., WorkerProcess], page: Page
) -> None:
    """`scalr-queue dashboard --read-only` shows the queue without any action button."""
    base = serve_dashboard(spawn, "--read-only")
    await enqueue("add", x=1, y=1)
    await page.goto(base + "/")
    await expect(page.locator(f'tr[data-queue="{queue}"]')).to_be_visible()
    await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    await expect(page.locator(".badge.muted")).to_have_text("read-only")
