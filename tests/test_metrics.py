"""Prometheus metrics: the producer's counter, the worker's metrics and the queue exporter, each scraped and parsed."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scalr_queue import enqueue, enqueue_many, metrics, queues
from scalr_queue.client import default_client
from scalr_queue.config import get_settings, load_settings
from scalr_queue.exporter import GAUGES, UP_GAUGE, registry
from scalr_queue.failed import FailedJob, FailedStore, now_iso
from scalr_queue.fastapi import metrics_router
from scalr_queue.testing import free_port
from tests.conftest import WorkerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(url: str, timeout: float = 20) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return parse(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_metrics_router_counts_enqueued_jobs(queue: str) -> None:
    """enqueue and enqueue_many count scalr_queue_enqueued_total{queue,task}, served by metrics_router()."""
    app = FastAPI()
    app.include_router(metrics_router())
    await enqueue("add", x=1, y=2)
    await enqueue("add", x=1, y=2, _job_id=f"{queue}-dup")
    await enqueue("add", x=1, y=2, _job_id=f"{queue}-dup")  # a duplicate queues nothing: not counted
    await enqueue_many([("add", {"x": i, "y": 0}) for i in range(3)] + [("greet", {"name": "n"})])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as web:
        response = await web.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    assert value(samples, "scalr_queue_enqueued_total", queue=queue, task="add") == 5
    assert value(samples, "scalr_queue_enqueued_total", queue=queue, task="greet") == 1


def test_job_finished_keeps_labels_bounded(queue: str) -> None:
    """An unknown outcome becomes "other", a long task name is cut, and the histograms get the try."""
    metrics.job_finished(queue, "t" * 500, "exploded", duration_s=0.2, wait_s=1.5)
    metrics.job_finished(queue, "add", "succeeded", duration_s=0.01, wait_s=-1)
    samples = parse(metrics.exposition()[0].decode())
    long_task = "t" * metrics.LABEL_MAX
    assert value(samples, "scalr_queue_jobs_total", queue=queue, task=long_task, outcome="other") == 1
    assert value(samples, "scalr_queue_jobs_total", queue=queue, task="add", outcome="succeeded") == 1
    assert value(samples, "scalr_queue_job_duration_seconds_count", queue=queue, task="add") == 1
    assert value(samples, "scalr_queue_job_wait_seconds_count", queue=queue) == 2
    assert (
        value(samples, "scalr_queue_job_wait_seconds_bucket", queue=queue, le="0.005") == 1
    )  # -1 s counts as 0


def test_without_prometheus_client_recording_is_free_and_serving_says_what_to_install() -> None:
    """With prometheus-client missing, recording is a no-op and serving raises MissingExtraError with the pip command."""
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed
import scalr_queue
from scalr_queue import metrics
metrics.record_enqueued("q", "t")
metrics.job_finished("q", "t", "succeeded", 0.1, 0.1)
print("available", metrics.available())
for call in (metrics.require, lambda: metrics.start_worker_server(1), __import__("scalr_queue.fastapi").fastapi.metrics_router):
    try:
        call()
    except scalr_queue.exceptions.MissingExtraError as exc:
        print("error", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "available False" in out
    assert out.count("pip install 'scalr_queue[metrics]'") == 3


async def test_exporter_reports_each_queue(queue: str) -> None:
    """The exporter's gauges match the queue: ready, deferred, in progress, failed, workers, paused, oldest age."""
    for i in range(3):
        await enqueue("add", x=i, y=0)
    for i in range(2):
        await enqueue("add", x=i, y=0, _defer_by=600)
    settings = get_settings()
    store = FailedStore(default_client().redis, max_age_s=3600, max_count=1000)
    await store.record(
        FailedJob(
            f"{queue}-f", "boom", {}, queue, 1, "raised", "ValueError", "no", None, now_iso(), now_iso()
        )
    )
    await queues.pause(default_client().redis, queue)
    samples = parse(generate_latest(registry(settings)).decode())
    assert value(samples, UP_GAUGE) == 1
    expected = {
        "scalr_queue_queue_ready_jobs": 3,
        "scalr_queue_queue_deferred_jobs": 2,
        "scalr_queue_jobs_in_progress": 0,
        "scalr_queue_failed_jobs": 1,
        "scalr_queue_workers": 0,
        "scalr_queue_queue_paused": 1,
    }
    for name, wanted in expected.items():
        assert value(samples, name, queue=queue) == wanted, name
    assert (value(samples, "scalr_queue_queue_oldest_ready_age_seconds", queue=queue) or -1) >= 0
    assert set(GAUGES) <= {name for name, _ in samples}


def test_exporter_with_redis_down_reports_it() -> None:
    """With Redis unreachable a scrape still answers: scalr_queue_redis_up 0 and no queue samples."""
    settings = load_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=1)
    samples = parse(generate_latest(registry(settings)).decode())
    assert value(samples, UP_GAUGE) == 0
    assert not [key for key in samples if key[0] != UP_GAUGE]


async def test_metrics_command_serves_the_gauges(queue: str, spawn: Callable[..., WorkerProcess]) -> None:
    """`scalr-queue metrics --port P` serves every queue's gauges over HTTP, live workers included."""
    spawn("tests.apps.basic").wait_started()
    await enqueue("add", x=1, y=1, _defer_by=600)
    port = free_port()
    spawn("metrics", "--port", str(port), "--host", "127.0.0.1", module="scalr_queue.cli._main")
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "scalr_queue_workers", queue=queue) == 1
    assert value(samples, "scalr_queue_queue_deferred_jobs", queue=queue) == 1


async def test_worker_process_serves_its_metrics(queue: str, spawn: Callable[..., WorkerProcess]) -> None:
    """A worker with SCALR_QUEUE_METRICS_PORT serves scalr_queue_jobs_total and the histograms for its jobs."""
    port = free_port()
    spawn("tests.apps.dashboard", env={"SCALR_QUEUE_METRICS_PORT": str(port)}).wait_started()
    job = await enqueue("add", x=1, y=1)
    assert job is not None
    assert await job.result(timeout=10) == 2
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        if value(samples, "scalr_queue_jobs_total", queue=queue, task="add", outcome="succeeded") == 1:
            break
        assert time.monotonic() < deadline, samples
        time.sleep(0.1)
    assert value(samples, "scalr_queue_job_duration_seconds_count", queue=queue, task="add") == 1
    assert value(samples, "scalr_queue_job_wait_seconds_count", queue=queue) == 1


@pytest.mark.parametrize("name", sorted(GAUGES))
def test_gauge_names_are_the_design_names(name: str) -> None:
    """Every exporter gauge is named scalr_queue_* as DESIGN §10 lists them (plus paused)."""
    design = {
        "scalr_queue_queue_ready_jobs",
        "scalr_queue_queue_deferred_jobs",
        "scalr_queue_queue_oldest_ready_age_seconds",
        "scalr_queue_failed_jobs",
        "scalr_queue_workers",
        "scalr_queue_jobs_in_progress",
    }
    assert name in design | {"scalr_queue_queue_paused"}


def test_import_scalr_queue_loads_no_optional_extra() -> None:
    """`import scalr_queue` and an enqueue path load neither prometheus-client nor the dashboard's libraries."""
    code = (
        "import sys, scalr_queue, scalr_queue.client; "
        "print(sorted(m for m in ('prometheus_client', 'jinja2', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
