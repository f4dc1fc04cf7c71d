"""Job ids: 128 random bits as 32 hex digits, like ``uuid4().hex``, from the operating system's random source.

Read 256 ids at a time: on the enqueue path one ``os.urandom(16)`` per job cost a system call, as much as the
rest of preparing the job. Each id of a block is handed out once, whichever thread asks (``next`` of an
``itertools.count`` is atomic), and a forked child starts a block of its own: it must never repeat its parent's.
"""

from __future__ import annotations

import itertools
import os
import threading

ID_BYTES = 16
BLOCK_IDS = 256


class _Block:
    __slots__ = ("data", "taken")

    def __init__(self) -> None:
        self.data = os.urandom(ID_BYTES * BLOCK_IDS)
        self.taken = itertools.count()


_block = _Block()
_refill = threading.Lock()


def new_job_id() -> str:
    """A fresh random job id."""
    global _block
    while True:
        block = _block
        index = next(block.taken)
        if index < BLOCK_IDS:
            start = index * ID_BYTES
            return block.data[start : start + ID_BYTES].hex()
        with _refill:
            if _block is block:
                _block = _Block()


def _after_fork_in_child() -> None:
    global _block
    _block = _Block()


os.register_at_fork(after_in_child=_after_fork_in_child)
