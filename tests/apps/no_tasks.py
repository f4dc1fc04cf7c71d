async def forgot_to_list_me(ctx: dict) -> None:
    return None
