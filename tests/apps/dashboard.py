"""A worker for the dashboard and metrics tests: the basic tasks, plus one whose failure an operator can fix."""

from __future__ import annotations

from scalr_queue import task
from tests.apps import basic


@task(max_tries=1)
async def fails_while_flag(ctx: dict, flag: str) -> str:
    """Fails while the Redis key ``flag`` exists: a failure an operator fixes, then retries from the dashboard."""
    if await ctx["redis"].exists(flag):
        raise RuntimeError(f"{flag} is set: the fix is not deployed yet")
    return "fixed"


tasks = [*basic.tasks, fails_while_flag]
