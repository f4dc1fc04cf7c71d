"""A newer release of the worker module: it knows a task the older one does not."""

from tests.apps.basic import add


async def shiny_new_task(ctx: dict, x: int) -> int:
    return x * 100


tasks = [add, shiny_new_task]
