async def noop(ctx: dict) -> None:
    return None


class WorkerSettings:
    functions = [noop]
    max_job = 50
