"""A FastAPI app that enqueues inside a request's span, with a request id bound for its logs: the producer side
of tests/test_tracing.py, run with uvicorn as its own process."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from scalr_queue.fastapi import ClientDep, lifespan
from tests.apps.otel_file import install

install("web")
tracer = trace.get_tracer("tests.apps.traced_web")
app = FastAPI(lifespan=lifespan())


@app.middleware("http")
async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """What an app's middleware does: a server span per request and its request id in the logging context."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    with (
        tracer.start_as_current_span(f"{request.method} {request.url.path}", kind=SpanKind.SERVER),
        structlog.contextvars.bound_contextvars(request_id=request_id),
    ):
        return await call_next(request)


@app.post("/reports/{label}")
async def create_report(label: str, client: ClientDep) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    job = await client.enqueue("traced_flaky", label=label)
    assert job is not None
    return {
        "job_id": job.job_id,
        "span_id": format(span.span_id, "016x"),
        "trace_id": format(span.trace_id, "032x"),
    }
