def not_async(ctx: dict) -> None:
    return None


tasks = [not_async]
