"""The no-op task of bench/workflow_cost.py, as a worker module."""

from __future__ import annotations

from scalr_queue import task


@task(max_tries=1)
async def noop(ctx: dict, n: int) -> None:
    """Does nothing: what is measured is the queue's own work."""


tasks = [noop]
