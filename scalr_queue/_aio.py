"""asyncio helpers that do not trust a single cancellation (CPython gh-86296: ``wait_for`` can swallow one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

CANCEL_RETRY_S = 0.1  # how often an unfinished cancelled task is cancelled again


async def cancel_until_done(tasks: Iterable[asyncio.Future[Any]], timeout: float) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and cancel again until each has ended or ``timeout`` passed; returns those still alive."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(CANCEL_RETRY_S, left))
    return pending
