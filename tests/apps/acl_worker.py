"""The basic tasks plus a cron job ticking every second: a worker that takes every path, for the ACL tests."""

from __future__ import annotations

from arq import cron

from tests.apps.basic import tasks as basic_tasks


async def tick(ctx: dict) -> str:
    return "tick"


tasks = basic_tasks
cron_jobs = [cron(tick, second=set(range(60)))]
