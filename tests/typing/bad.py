"""Mistakes mypy must catch on typed task handles; each line marked with an E comment must report an error
containing the text after it, and no other line may (tests/test_typing.py)."""

from __future__ import annotations

from typing import Any

from scalr_queue import task


@task
async def send_invoice_email(ctx: dict[str, Any], invoice_id: int) -> str:
    return f"sent {invoice_id}"


async def main() -> None:
    await send_invoice_email.enqueue(invoice_id="7")  # E: incompatible type "str"; expected "int"
    await send_invoice_email.enqueue(invoce_id=7)  # E: Unexpected keyword argument "invoce_id"
    await send_invoice_email.enqueue()  # E: Missing positional argument "invoice_id"
    await send_invoice_email.with_options(_defer_by="soon").enqueue(invoice_id=7)  # E: "_defer_by"
    job = await send_invoice_email.enqueue(invoice_id=7)
    if job is not None:
        count: int = await job.result()  # E: Incompatible types in assignment
        print(count)
