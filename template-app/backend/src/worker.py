"""The worker's tasks: `python -m scalr_queue.worker src.worker` runs them (10 at once, 300 s, 5 tries)."""

import asyncio
import logging

logger = logging.getLogger(__name__)

# Demo only: this customer's mail server refuses mail, so invoice 13's job fails, is retried, and lands in the
# failed store (`scalr-queue failed list`). Replace the body of the task with your own.
REFUSING_MAILBOXES = {13}


async def send_invoice_email(ctx: dict, invoice_id: int) -> dict:
    logger.info("sending invoice %s", invoice_id)  # carries job_id, task, queue and try in the worker's logs
    await asyncio.sleep(0.2)  # stands in for rendering the invoice and the SMTP round trip
    if invoice_id in REFUSING_MAILBOXES:
        raise ConnectionError(f"the mail server refused invoice {invoice_id}'s message")
    return {"invoice_id": invoice_id, "sent_to": f"customer-{invoice_id}@example.com"}


tasks = [send_invoice_email]

# Scheduled jobs run in the same worker. Uncomment to clean up every day at 03:00 (the worker's time zone):
#
# from arq import cron
#
# async def cleanup_stale_invoices(ctx: dict) -> None:
#     ...
#
# cron_jobs = [cron(cleanup_stale_invoices, hour=3, minute=0)]
