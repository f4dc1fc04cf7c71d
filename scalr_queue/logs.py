"""Structured logs: JSON lines in containers, readable lines in a terminal, one pipeline for ours and arq's.

The worker calls ``configure_logging()`` itself; a web process opts in with one call. Job events carry
``job_id``, ``task``, ``queue`` and ``try`` from structlog's context variables, so a task's own log lines
(structlog or plain ``logging``) carry them too.
"""

from __future__ import annotations

import logging
import sys
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


def _renderer(fmt: LogFormat) -> Any:
    if fmt == "auto":
        fmt = "console" if sys.stdout.isatty() else "json"
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())


def configure_logging(fmt: LogFormat | None = None, level: str | None = None) -> None:
    """Route structlog and stdlib logging (arq's included) to stdout in one format; safe to call again."""
    if fmt is None or level is None:
        from .config import get_settings

        settings = get_settings()
        fmt = fmt or settings.log_format
        level = level or settings.log_level
    json_output = _renderer(fmt).__class__ is structlog.processors.JSONRenderer
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_output:
        final += [structlog.processors.format_exc_info]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[*final, _renderer(fmt)],
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
    return structlog.stdlib.get_logger(name)
