"""A worker module with a full WorkerSettings class that inherits part of its settings."""

from arq import cron


async def whoami(ctx: dict) -> dict:
    return {"started_by": ctx.get("started_by"), "max_jobs_seen": ctx.get("max_jobs_seen")}


async def tick(ctx: dict) -> None:
    await ctx["redis"].set(f"{ctx['tick_key']}", "ticked")


async def startup(ctx: dict) -> None:
    ctx["started_by"] = "on_startup"
    ctx["tick_key"] = "tick:" + ctx["scalr_queue"].queue


class BaseSettings:
    functions = [whoami]
    on_startup = startup


class WorkerSettings(BaseSettings):
    max_jobs = 3
    cron_jobs = [cron(tick, run_at_startup=True)]
