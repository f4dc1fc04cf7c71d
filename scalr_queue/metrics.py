"""Prometheus metrics of producers and workers, recorded through a few functions that cost nothing without the extra.

prometheus-client is optional (``pip install 'scalr_queue[metrics]'``). Without it, importing this module works and
every ``record``-style function returns at once; only serving metrics raises MissingExtraError, naming the pip
command. With it, the metrics live in prometheus-client's default registry, so an app that already serves
``/metrics`` shows them too. Labels are bounded: queue, task and outcome, never a job id.

Producer (``client.py`` calls it): ``scalr_queue_enqueued_total{queue,task}``.
Worker (the engine calls ``job_finished``): ``scalr_queue_jobs_total{queue,task,outcome}``,
``scalr_queue_job_duration_seconds{queue,task}``, ``scalr_queue_job_wait_seconds{queue}``.
Queue-level gauges for any number of workers come from ``scalr-queue metrics`` (``scalr_queue.exporter``).
"""

from __future__ import annotations

from typing import Any

from .exceptions import MissingExtraError

OUTCOMES = frozenset({"succeeded", "failed", "retried", "released", "aborted"})
OTHER_OUTCOME = "other"  # any other value: the label set stays bounded whatever a caller passes
LABEL_MAX = 100  # characters of a task or queue label; a longer name is cut
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400)
PIP_HINT = "pip install 'scalr_queue[metrics]'"


class _Metrics:
    """The metric objects, made once per process in the default registry."""

    def __init__(self, prometheus_client: Any) -> None:
        counter, histogram = prometheus_client.Counter, prometheus_client.Histogram
        self.enqueued = counter(
            "scalr_queue_enqueued", "Jobs enqueued by this process, by queue and task.", ["queue", "task"]
        )
        self.jobs = counter(
            "scalr_queue_jobs",
            "Tries of jobs this worker ended, by queue, task and outcome (succeeded, failed, retried, released, "
            "aborted).",
            ["queue", "task", "outcome"],
        )
        self.duration = histogram(
            "scalr_queue_job_duration_seconds",
            "Seconds one try of a job ran, by queue and task.",
            ["queue", "task"],
            buckets=DURATION_BUCKETS,
        )
        self.wait = histogram(
            "scalr_queue_job_wait_seconds",
            "Seconds from when a job was due (enqueued, or its deferral ended) to the start of its try, by queue.",
            ["queue"],
            buckets=WAIT_BUCKETS,
        )


_UNLOADED: Any = object()
_metrics: _Metrics | None = _UNLOADED


def _get() -> _Metrics | None:
    """The metric objects, or None without prometheus-client (looked for once)."""
    global _metrics
    if _metrics is _UNLOADED:
        try:
            import prometheus_client
        except ImportError:
            _metrics = None
        else:
            _metrics = _Metrics(prometheus_client)
    return _metrics


def available() -> bool:
    """Whether prometheus-client is installed, so metrics are recorded."""
    return _get() is not None


def record_enqueued(queue: str, task: str, n: int = 1) -> None:
    """Count ``n`` jobs of ``task`` put on ``queue`` (the producer calls it once per enqueued job or batch)."""
    counter = _enqueued_children.get((queue, task))
    if counter is None:
        metrics = _metrics if _metrics is not _UNLOADED else _get()
        if metrics is None:
            return
        counter = metrics.enqueued.labels(_label(queue), _label(task))
        if len(_enqueued_children) < _CHILDREN_CACHED:
            _enqueued_children[(queue, task)] = counter
    counter.inc(n)


# The labelled counter of each (queue, task) the producer enqueued to: prometheus-client's own lookup costs more
# than the rest of the count, on the enqueue path. Bounded: labels are task and queue names, a few dozen.
_CHILDREN_CACHED = 1000
_enqueued_children: dict[tuple[str, str], Any] = {}


def job_finished(
    queue: str, task: str, outcome: str, duration_s: float | None = None, wait_s: float | None = None
) -> None:
    """Record one try that ended: its outcome, how long it ran, how long it waited to start.

    ``outcome`` is one of ``OUTCOMES``; ``duration_s`` is the try's run time (None when the task never ran, e.g.
    an unknown task); ``wait_s`` is the time from when the try was due to its start (None to leave it out).
    """
    metrics = _metrics if _metrics is not _UNLOADED else _get()
    if metrics is None:
        return
    queue, task = _label(queue), _label(task)
    metrics.jobs.labels(queue, task, outcome if outcome in OUTCOMES else OTHER_OUTCOME).inc()
    if duration_s is not None:
        metrics.duration.labels(queue, task).observe(max(duration_s, 0.0))
    if wait_s is not None:
        metrics.wait.labels(queue).observe(max(wait_s, 0.0))


_serving: set[tuple[str, int]] = set()


def start_worker_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this process's metrics on ``http://addr:port/metrics`` from a daemon thread (the worker calls it at
    start when ``SCALR_QUEUE_METRICS_PORT`` is set). A second call for the same address does nothing."""
    prometheus_client = require()
    _get()
    if (addr, port) in _serving:
        return
    prometheus_client.start_http_server(port, addr=addr)
    _serving.add((addr, port))


def exposition(registry: Any = None) -> tuple[bytes, str]:
    """The text exposition of ``registry`` (default: the process's) and its content type, for an HTTP route."""
    prometheus_client = require()
    _get()
    return (
        prometheus_client.generate_latest(registry or prometheus_client.REGISTRY),
        prometheus_client.CONTENT_TYPE_LATEST,
    )


def require() -> Any:
    """The prometheus_client module, or MissingExtraError naming the pip command."""
    try:
        import prometheus_client
    except ImportError:
        raise MissingExtraError(f"metrics need prometheus-client: {PIP_HINT}") from None
    return prometheus_client


def _label(value: str) -> str:
    text = value if isinstance(value, str) else str(value)
    return text[:LABEL_MAX]
