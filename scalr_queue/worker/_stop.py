"""Stopping is a state, not a hope.

On Python 3.11 one ``task.cancel()`` can be lost: ``asyncio.wait_for`` drops a cancellation that arrives in the
loop iteration in which the call it wraps completes (CPython gh-86296), and redis-py sends every command through
``wait_for``. arq stops its worker with a single cancel of its main task. Here a stop request sets a state that the
worker's loop checks every turn and wakes it; tasks that must end are cancelled again until they have; and, for a
worker process, a watchdog thread ends the process if it is still alive well past its deadline, whatever the
event loop is doing.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from signal import Signals

from .._aio import cancel_until_done

WATCHDOG_MARGIN_S = 10.0  # past the stop deadline, the watchdog ends the process


class StopState:
    """Whether the worker is stopping, since when, and by when it must be gone."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: Signals | None = None
        self.deadline: float | None = None  # monotonic
        self.hurry = False  # a second signal: cancel running jobs now, no more grace
        self.event = asyncio.Event()
        self.hurry_event = asyncio.Event()

    def request(self, signum: Signals | None, budget_s: float) -> bool:
        """Ask the worker to stop within ``budget_s``; True the first time, False if it was already stopping."""
        if self.requested:
            self.hurry = True
            self.hurry_event.set()
            return False
        self.requested = True
        self.signal = signum
        self.deadline = time.monotonic() + budget_s
        self.event.set()
        return True

    def left_s(self) -> float:
        return 0.0 if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)


__all__ = ["StopState", "cancel_until_done", "start_watchdog"]


def start_watchdog(deadline_s: float, describe: str) -> threading.Event:
    """End this process if it is still running ``deadline_s`` from now: the last resort of a stop. Set the event
    it returns once the stop is done, or the process (say, a script that called ``run()``) ends later anyway."""
    disarmed = threading.Event()

    def watch() -> None:
        if disarmed.wait(deadline_s):
            return
        sys.stderr.write(
            f'{{"event": "worker_killed_by_watchdog", "level": "error", "waited_s": {deadline_s:.1f}, '
            f'"reason": "{describe}"}}\n'
        )
        sys.stderr.flush()
        os._exit(1)

    thread = threading.Thread(target=watch, name="scalr_queue stop watchdog", daemon=True)
    thread.start()
    return disarmed
