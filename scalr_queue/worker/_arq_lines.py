"""arq's own worker lines (start, health record, shutdown) on the ``arq.worker`` logger, for those who read them.

They are logged only when that logger is enabled for INFO (``SCALR_QUEUE_ARQ_JOB_LINES`` for a worker process),
with arq's wording and our worker's counts, and they say what our worker really does: a stop with a grace says
"to be completed", not "ongoing to cancel". The per-job lines (→ ← ↻ ! ⊘) are the runner's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

arq_log = logging.getLogger("arq.worker")


def wanted(runner_lines: bool = True) -> bool:
    """Whether to log arq's lines: the logger is on for INFO and the runner's own arq lines are not off."""
    return runner_lines and arq_log.isEnabledFor(logging.INFO)


def starting(functions: Iterable[str]) -> None:
    names = list(functions)
    arq_log.info("Starting worker for %d functions: %s", len(names), ", ".join(names))


def shutdown(on: str, counts: tuple[int, int, int], running: int, then: str) -> None:
    """``counts``: jobs complete, failed, retried; ``then``: what happens to the ``running`` ones."""
    complete, failed, retried = counts
    arq_log.info(
        "shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d %s",
        on,
        complete,
        failed,
        retried,
        running,
        then,
    )


class HealthLines:
    """arq's rule for its health record's line: logged when its counts change, not the first time."""

    def __init__(self) -> None:
        self.last = ""

    def recorded(self, info: str, *, log: bool) -> None:
        counts = info[info.find("j_complete=") :]
        if log and self.last and counts != self.last:
            arq_log.info("recording health: %s", info)
        self.last = counts
