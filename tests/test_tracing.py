"""Tracing and logging context from enqueue to the worker (DESIGN §10): a real web process (FastAPI under
uvicorn) enqueues inside a request's span with a request id bound, a real worker runs the job; both export
their spans with the OpenTelemetry SDK to one file (tests/apps/otel_file.py), which the tests read back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from scalr_queue import enqueue, keys
from scalr_queue.config import reset_settings
from scalr_queue.testing import free_port
from tests.conftest import ROOT, WorkerProcess


def spans(
    path: Path, predicate: Callable[[dict[str, Any]], bool], count: int, timeout: float = 20
) -> list[dict]:
    """The exported spans that match, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [s for s in map(json.loads, lines) if predicate(s)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def start_web(spawn: Callable[..., WorkerProcess], port: int, env: dict[str, str]) -> None:
    spawn(
        "tests.apps.traced_web:app", "--port", str(port), "--log-level", "warning", module="uvicorn", env=env
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_job_is_traced_from_the_request_to_each_try(
    spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Try 1's span is a child of the request's span (same trace), failed, with its exception; try 2 is a new
    root span linked to the request's span; both carry job id, task, queue and try. The worker's log lines
    for the job carry the trace id and the request id the web process had bound."""
    trace_file = tmp_path / "spans.jsonl"
    env = {"TRACE_FILE": str(trace_file), "SCALR_QUEUE_PROPAGATE": "request_id"}
    port = free_port()
    start_web(spawn, port, env)
    worker = spawn("tests.apps.traced", env={"TRACE_FILE": str(trace_file)})
    worker.wait_started()

    reply = httpx.post(f"http://127.0.0.1:{port}/reports/q3", headers={"x-request-id": "req-42"}, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("job_id") == body["job_id"])

    runs = spans(trace_file, lambda s: s["name"] == "scalr_queue.run traced_flaky", 2)
    assert len(runs) == 2
    first, second = sorted(runs, key=lambda s: s["attributes"]["scalr_queue.try"])
    # The span current where the handler enqueued (FastAPI's own endpoint span, inside the request's).
    enqueuing = spans(trace_file, lambda s: s["span_id"] == body["span_id"], 1)[0]
    request = spans(trace_file, lambda s: s["name"] == "POST /reports/q3", 1)[0]
    assert enqueuing["service"] == "web" and first["service"] == "worker"
    assert enqueuing["trace_id"] == request["trace_id"] == body["trace_id"]

    assert first["kind"] == "CONSUMER"
    assert first["trace_id"] == request["trace_id"]
    assert first["parent_span_id"] == enqueuing["span_id"]
    assert first["links"] == []
    assert first["status"] == "ERROR"
    assert "exception" in first["events"]
    assert first["attributes"] == {
        "scalr_queue.job_id": body["job_id"],
        "scalr_queue.task": "traced_flaky",
        "scalr_queue.queue": worker_queue(),
        "scalr_queue.try": 1,
        "scalr_queue.outcome": "retryin",
    }

    assert second["parent_span_id"] is None
    assert second["trace_id"] != request["trace_id"]
    assert second["links"] == [{"trace_id": request["trace_id"], "span_id": enqueuing["span_id"]}]
    assert second["status"] == "UNSET"
    assert second["attributes"]["scalr_queue.try"] == 2
    assert second["attributes"]["scalr_queue.outcome"] == "succeeded"

    inner = spans(trace_file, lambda s: s["name"] == "inside traced_flaky", 2)
    assert {s["parent_span_id"] for s in inner} == {first["span_id"], second["span_id"]}

    lines = [e for e in worker.events if e.get("job_id") == body["job_id"]]
    running = {e["try"]: e for e in lines if e.get("event") == "flaky_running"}
    assert running[1]["trace_id"] == request["trace_id"]
    assert running[2]["trace_id"] == second["trace_id"]
    for event in ("job_started", "job_retrying", "job_succeeded", "flaky_running"):
        assert any(e["event"] == event for e in lines), event
    for line in lines:
        assert line["request_id"] == "req-42", line
        assert line["trace_id"] in (request["trace_id"], second["trace_id"]), line


def worker_queue() -> str:
    from scalr_queue.config import get_settings

    return get_settings().name


async def test_the_trace_context_is_in_the_record_not_the_arguments(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enqueued inside a span, the job record holds the W3C traceparent of that span and the named logging
    context under its meta (``sq``); the task's kwargs stay exactly what was passed."""
    import structlog

    monkeypatch.setenv("SCALR_QUEUE_PROPAGATE", "request_id,tenant")
    reset_settings()
    tracer = TracerProvider().get_tracer("test")
    with (
        tracer.start_as_current_span("handler") as span,
        structlog.contextvars.bound_contextvars(request_id="r-1", tenant=7, other="not carried"),
    ):
        job = await enqueue("traced_flaky", label="x")
    assert job is not None
    stored = json.loads(await redis.get(keys.job_key(job.job_id)))
    assert stored["k"] == {"label": "x"}
    context = span.get_span_context()
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert stored["sq"]["trace"] == {"traceparent": traceparent}
    assert stored["sq"]["context"] == {"request_id": "r-1", "tenant": 7}

    plain = await enqueue("traced_flaky", label="y")  # no span, nothing bound: no meta at all
    assert plain is not None
    assert "sq" not in json.loads(await redis.get(keys.job_key(plain.job_id)))


async def test_malformed_trace_and_context_in_a_record_are_ignored(
    spawn: Callable[..., WorkerProcess], redis: Redis, tmp_path: Path
) -> None:
    """Whatever sits in a record's meta (it came from Redis), every try runs: a bad traceparent or context
    gives a root span and no carried fields (an oversized tracestate is dropped, its traceparent kept), never a
    failed try."""
    bad_meta: list[Any] = [
        {"trace": "00-garbage", "context": ["request_id"]},
        {"trace": {"traceparent": 5}, "context": {"request_id": {"nested": 1}, "job_id": "spoofed"}},
        {"trace": {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}},
        {"trace": {"traceparent": "zz-" + "f" * 32 + "-" + "f" * 16 + "-01", "tracestate": 9}},
        {"trace": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "x" * 10_000}},
        "not a dict",
    ]
    ids = []
    for meta in bad_meta:
        job = await enqueue("steps", n=1)
        assert job is not None
        key = keys.job_key(job.job_id)
        record = json.loads(await redis.get(key))
        record["sq"] = meta
        await redis.set(key, json.dumps(record))
        ids.append(job.job_id)
    trace_file = tmp_path / "spans.jsonl"
    worker = spawn("tests.apps.traced", env={"TRACE_FILE": str(trace_file)})
    for job_id in ids:
        done = worker.wait_for(
            lambda e, j=job_id: e.get("job_id") == j and e.get("event") in ("job_succeeded", "job_failed")
        )
        assert done["event"] == "job_succeeded", worker.output
        assert "request_id" not in done
    started = [e for e in worker.events if e.get("event") == "job_started"]
    assert all(e["job_id"] in ids for e in started)  # "spoofed" never replaced the worker's own job_id
    runs = spans(trace_file, lambda s: s["name"] == "scalr_queue.run steps", len(ids))
    assert len(runs) == len(ids)
    parents = sorted(str(s["parent_span_id"]) for s in runs)  # only the one well-formed traceparent is used
    assert parents == ["None"] * (len(ids) - 1) + ["b" * 16]


NO_OTEL_PRODUCER = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import structlog
import scalr_queue
from scalr_queue import tracing
assert not tracing.ENABLED

async def main():
    with structlog.contextvars.bound_contextvars(request_id="plain-7"):
        job = await scalr_queue.enqueue("add", x=2, y=3)
    assert await job.result(timeout=20) == 5
    print("ok", job.job_id)
    await scalr_queue.close()

asyncio.run(main())
"""

NO_OTEL_WORKER = """
import runpy, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
sys.argv = ["scalr_queue.worker", "tests.apps.basic"]
runpy.run_module("scalr_queue.worker", run_name="__main__", alter_sys=True)
"""


def test_without_opentelemetry_jobs_run_and_context_still_travels(
    spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """With opentelemetry impossible to import, in the producer and in the worker, scalr_queue imports, a job is
    enqueued and run, and the propagated request id still reaches the worker's log lines (without trace_id)."""
    import os

    env = {**os.environ, "SCALR_QUEUE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    worker = WorkerProcess([sys.executable, "-c", textwrap.dedent(NO_OTEL_WORKER)], env)
    try:
        worker.wait_started()
        produced = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(NO_OTEL_PRODUCER)],
            cwd=ROOT,
            env={**env, "SCALR_QUEUE_PROPAGATE": "request_id"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert produced.returncode == 0, produced.stdout + produced.stderr
        job_id = produced.stdout.split()[-1]
        done = worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("job_id") == job_id)
        assert done["request_id"] == "plain-7"
        assert "trace_id" not in done
    finally:
        worker.stop()
