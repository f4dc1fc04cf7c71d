"""Trace context and logging context from ``enqueue`` to the worker's try: the only module that touches
OpenTelemetry.

Two calls, one on each side:

- ``carry(names)`` at enqueue: what goes into the job record's ``meta`` (never its kwargs). ``meta["trace"]``
  holds the W3C trace context (``traceparent``, ``tracestate``) of the span current at enqueue, when
  OpenTelemetry is installed and a span is current; ``meta["context"]`` holds the values of the structlog
  context variables named in ``SCALR_QUEUE_PROPAGATE`` (e.g. ``request_id``), made JSON-safe and bounded.
- ``try_scope(...)`` on the worker, around each try: binds the job's log fields, the carried context and
  ``trace_id`` with structlog's context variables, and runs the try in a span ``scalr_queue.run <task>``
  (SpanKind.CONSUMER) with ``scalr_queue.job_id``, ``scalr_queue.task``, ``scalr_queue.queue`` and
  ``scalr_queue.try`` as attributes. Try 1 is a child of the enqueuing span; a later try is a new root span
  with a link to it (a retry is its own unit of work, often long after). ``finish(outcome)`` marks a try
  that raised: error status and the exception recorded.

Whether OpenTelemetry is importable is checked once, here, at import: without it both calls take a path that
does nothing OpenTelemetry-related at all. Everything in ``meta`` came from Redis and is untrusted: a malformed
trace or context is ignored, never raised.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from .outcome import Failed, Outcome, RetryIn

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: tracing is off, at no cost
    ENABLED = False
else:
    ENABLED = True
    _W3C = TraceContextTextMapPropagator()
    _TRACER = trace.get_tracer("scalr_queue")

TRACE_META = "trace"
CONTEXT_META = "context"
SPAN_PREFIX = "scalr_queue.run "
MAX_CONTEXT_NAMES = 16  # SCALR_QUEUE_PROPAGATE names at most
MAX_CONTEXT_VALUE = 256  # characters of one carried value; a longer string is cut
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_RESERVED = frozenset({"job_id", "task", "queue", "try", "trace_id"})  # the worker's own fields win

__all__ = ["ENABLED", "TryScope", "carry", "context_names", "try_scope"]


def context_names(setting: str | None) -> tuple[str, ...]:
    """``SCALR_QUEUE_PROPAGATE`` as names; ValueError naming the first entry that is not one."""
    if not setting or not setting.strip():
        return ()
    names = tuple(dict.fromkeys(name.strip() for name in setting.split(",")))
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a context variable name; write names separated by commas, e.g. request_id,tenant"
            )
        if name in _RESERVED:
            raise ValueError(f"{name!r} is bound by the worker itself for each job; propagate other names")
    if len(names) > MAX_CONTEXT_NAMES:
        raise ValueError(f"{len(names)} names; at most {MAX_CONTEXT_NAMES} can be propagated")
    return names


def carry(names: tuple[str, ...]) -> dict[str, Any]:
    """What the enqueue adds to the job record's meta: the trace context and the named logging context."""
    meta: dict[str, Any] = {}
    if ENABLED:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
            if carrier:
                meta[TRACE_META] = carrier
    if names:
        bound = structlog.contextvars.get_contextvars()
        values = {name: _json_safe(bound[name]) for name in names if name in bound}
        if values:
            meta[CONTEXT_META] = values
    return meta


def _json_safe(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_CONTEXT_VALUE]


def carried_context(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The logging context in a job's meta, checked: names as at enqueue, scalar values, bounded."""
    raw = meta.get(CONTEXT_META)
    if not isinstance(raw, dict):
        return {}
    found: dict[str, Any] = {}
    for name, value in raw.items():
        if len(found) >= MAX_CONTEXT_NAMES:
            break
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
            continue
        if value is None or isinstance(value, bool | int | float):
            found[name] = value
        elif isinstance(value, str):
            found[name] = value[:MAX_CONTEXT_VALUE]
    return found


def _carrier(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """The W3C headers in a job's meta, or None if absent or malformed."""
    raw = meta.get(TRACE_META)
    if not isinstance(raw, dict):
        return None
    parent = raw.get("traceparent")
    if not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent):
        return None
    carrier = {"traceparent": parent}
    state = raw.get("tracestate")
    if isinstance(state, str) and len(state) <= 512:
        carrier["tracestate"] = state
    return carrier


class TryScope:
    """The span of one try (None without OpenTelemetry); ``finish`` reports how the try ended."""

    __slots__ = ("span",)

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def finish(self, outcome: Outcome) -> None:
        span = self.span
        if span is None:
            return
        error = outcome.error if isinstance(outcome, Failed | RetryIn) else None
        span.set_attribute("scalr_queue.outcome", type(outcome).__name__.lower())
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))


class _Untraced:
    """The scope of a try with no span to record: only the log fields bound (the common case: kept cheap)."""

    __slots__ = ("_tokens", "fields")
    _scope = TryScope()

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __enter__(self) -> TryScope:
        self._tokens = structlog.contextvars.bind_contextvars(**self.fields)
        return self._scope

    def __exit__(self, *exc_info: object) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)


def try_scope(meta: Mapping[str, Any], fields: dict[str, Any]) -> contextlib.AbstractContextManager[TryScope]:
    """Around one try: its log fields (``job_id``, ``task``, ``queue``, ``try``) bound with the carried context
    and, with OpenTelemetry, the try's span current and its ``trace_id`` bound too."""
    context = carried_context(meta) if CONTEXT_META in meta else {}
    if not ENABLED or not _recording():
        return _Untraced({**context, **fields})
    return _traced(meta, context, fields)


@contextlib.contextmanager
def _traced(meta: Mapping[str, Any], context: dict[str, Any], fields: dict[str, Any]) -> Iterator[TryScope]:
    parent, links = _parent(meta, fields["try"])
    attributes = {
        "scalr_queue.job_id": fields["job_id"],
        "scalr_queue.task": fields["task"],
        "scalr_queue.queue": fields["queue"],
        "scalr_queue.try": fields["try"],
    }
    with _TRACER.start_as_current_span(
        SPAN_PREFIX + fields["task"],
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        record_exception=False,  # the try's outcome says whether it failed, not an exception escaping here
        set_status_on_exception=False,
    ) as span:
        span_context = span.get_span_context()
        traced = {"trace_id": format(span_context.trace_id, "032x")} if span_context.is_valid else {}
        with structlog.contextvars.bound_contextvars(**context, **fields, **traced):
            yield TryScope(span)


def _recording() -> bool:
    """Whether the app set a tracer provider (the SDK's, say): until then OpenTelemetry's API hands out no-op
    spans, and starting one per try would cost the worker a tenth of its time per job for nothing. Looked at per
    try, so a provider set in ``on_startup`` counts."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _parent(meta: Mapping[str, Any], job_try: int) -> tuple[Any, list[Any]]:
    """The context to start the try's span in (never the worker's own current span) and its links."""
    root = otel_context.Context()
    carrier = _carrier(meta)
    if carrier is None:
        return root, []
    try:
        extracted = _W3C.extract(carrier)
        enqueuing = trace.get_current_span(extracted).get_span_context()
    except Exception:  # untrusted input: a propagator that chokes on it means no parent, not a failed try
        return root, []
    if not enqueuing.is_valid:
        return root, []
    if job_try <= 1:
        return extracted, []
    return root, [Link(enqueuing, {"scalr_queue.link": "enqueued"})]
