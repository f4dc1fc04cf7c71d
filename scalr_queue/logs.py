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

# arq logs each job as a one-line summary ('%6.2fs → ...'); our job_* events replace those lines.
_ARQ_JOB_LINE_PREFIXES = ("%6.2fs → ", "%6.2fs ← ", "%6.2fs ↻ %s retrying", "%6.2fs ! %s failed")


class _DropArqJobLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_ARQ_JOB_LINE_PREFIXES))


class _ScalrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so configuring again replaces it instead of adding a second one."""


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


def configure_logging(fmt: LogFormat | None = None, level: str | None = None) -> None:
    """Route structlog and stdlib logging (arq's included) to stdout in one format; safe to call again.

    structlog's own events (ours, and a task's structlog calls) go straight to stdout, with no detour through
    stdlib logging: a worker logs twice per job. stdlib records (arq's, a task's ``logging`` calls) are rendered by
    the same processors through a handler on the root logger.
    """
    if fmt is None or level is None:
        from .config import get_settings

        settings = get_settings()
        fmt = fmt or settings.log_format
        level = level or settings.log_level
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
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
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
    handler = _ScalrHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_DropArqJobLines())
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


def get_logger(name: str = "scalr_queue") -> Any:
    """A structlog logger whose events carry ``logger=name``."""
    return structlog.get_logger(logger_name=name)  # shown as "logger", like a stdlib record's
