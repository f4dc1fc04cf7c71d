"""Everything scalr_queue keeps per process, in one object with a reset (tests, reloads, notebooks).

The settings read from the environment, the task registries imported for ``SCALR_QUEUE_TASKS``, and the default
client of each running event loop. ``scalr_queue.testing.reset()`` forgets what was read, so the next call reads
the environment again; default clients are per event loop and are closed (and forgotten) by
``scalr_queue.close()`` on their loop, never dropped with their connections open.
"""

from __future__ import annotations

import weakref
from typing import Any


class ProcessState:
    def __init__(self) -> None:
        self.settings: Any = None  # config.Settings, read on first use
        self.registries: dict[str, Any] = {}  # module path -> tasks.TaskRegistry
        self.clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # loop -> Client

    def reset(self) -> None:
        self.settings = None
        self.registries.clear()


STATE = ProcessState()
