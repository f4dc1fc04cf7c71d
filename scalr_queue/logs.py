"""Structured logs: JSON lines in containers, readable lines in a terminal, one pipeline for ours and arq's.

The worker calls ``configure_logging()`` itself; a web process opts in with one call. Job events carry
``job_id``, ``task``, ``queue`` and ``try`` from structlog's context variables, so a task's own log lines
(structlog or plain ``logging``) carry them too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

# arq's per-job lines ('%6.2fs → ...') go to this logger; our job_* events say the same, so it is quiet unless
# SCALR_QUEUE_ARQ_JOB_LINES asks for both.
ARQ_JOB_LOGGER = "arq.worker"


class _ScalrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` (or stderr) is now (tests and tools swap it); marks the handler we
    installed, so configuring again replaces it instead of adding a second one."""

    def __init__(self, stream_name: str) -> None:
        self.stream_name = stream_name
        super().__init__(getattr(sys, stream_name))

    @property
    def stream(self) -> Any:
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _CurrentStreamLoggerFactory:
    """structlog loggers writing to the current ``sys.stdout`` (or stderr), not the one seen at configure time."""

    def __init__(self, stream_name: str) -> None:
        self.stream_name = stream_name

    def __call__(self, *args: Any) -> structlog.WriteLogger:
        return structlog.WriteLogger(getattr(sys, self.stream_name))


def _logger_field(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``get_logger(name)`` binds ``logger_name`` (structlog reserves ``logger``); show it as ``logger``."""
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event


def _renderer(fmt: LogFormat) -> Any:
    if fmt == "auto":
        fmt = "console" if sys.stdout.isatty() else "json"
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())


def configure_logging(
    fmt: LogFormat | None = None, level: str | None = None, *, arq_lines: bool = False, stderr: bool = False
) -> None:
    """Route structlog and stdlib logging (arq's included) to stdout in one format; safe to call again.

    ``stderr``: for a command whose stdout is its output (the CLI). ``arq_lines``: keep arq's per-job lines.

    structlog's own events (ours, and a task's structlog calls) go straight to stdout, with no detour through
    stdlib logging: a worker logs twice per job. stdlib records (arq's, a task's ``logging`` calls) are rendered by
    the same processors through a handler on the root logger.
    """
    if fmt is None or level is None:
        from .config import get_settings

        settings = get_settings()
        fmt = fmt or settings.log_format
        level = level or settings.log_level
    stream_name = "stderr" if stderr else "stdout"
    renderer = _renderer(fmt)
    tracebacks = (
        [structlog.processors.format_exc_info]
        if isinstance(renderer, structlog.processors.JSONRenderer)
        else []
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _logger_field,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            *tracebacks,
            renderer,
        ],
        logger_factory=_CurrentStreamLoggerFactory(stream_name),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tracebacks, renderer],
    )
    handler = _ScalrHandler(stream_name)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ScalrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # arq's CLI installs its own handlers on its loggers; send everything through ours instead.
    for name in ("arq", "arq.worker", "arq.connections", "arq.jobs"):
        arq_logger = logging.getLogger(name)
        arq_logger.handlers.clear()
        arq_logger.propagate = True
        arq_logger.setLevel(logging.NOTSET)
    if not arq_lines:
        logging.getLogger(ARQ_JOB_LOGGER).setLevel(logging.WARNING)


def get_logger(name: str = "scalr_queue") -> Any:
    """A structlog logger whose events carry ``logger=name``."""
    return structlog.get_logger(logger_name=name)  # shown as "logger", like a stdlib record's
