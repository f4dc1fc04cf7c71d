"""A worker whose tasks are traced (the SDK exports to ``TRACE_FILE``, tests/apps/otel_file.py) and report
progress: the worker side of tests/test_tracing.py."""

from __future__ import annotations

import structlog
from opentelemetry import trace

from scalr_queue import progress, task
from tests.apps.otel_file import install

install("worker")
log = structlog.get_logger("tests.apps.traced")
tracer = trace.get_tracer("tests.apps.traced")


@task(max_tries=2, backoff=0.05)
async def traced_flaky(ctx: dict, label: str) -> str:
    """Fails its first try, succeeds on the second; logs and reports progress on each."""
    with tracer.start_as_current_span("inside traced_flaky"):
        log.info("flaky_running", label=label)
        await progress(ctx, 0.5, f"try {ctx['job_try']} half way")
    if ctx["job_try"] == 1:
        raise ValueError(f"first try of {label} fails")
    await progress(ctx, 1.0, "done")
    return label


async def steps(ctx: dict, n: int) -> int:
    """Reports progress after each step, then waits to be looked at."""
    for i in range(1, n + 1):
        await progress(ctx, i / n, f"step {i} of {n}")
    return n


tasks = [traced_flaky, steps]
