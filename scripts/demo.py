"""`make demo`: the template app's two processes on a local Redis, start to finish, in well under a minute.

A throwaway redis-server (the one on PATH, else the bundled one), the worker (`python -m scalr_queue.worker
src.worker`) and the backend (`uvicorn src.main:app`) from template-app/backend, as the compose file runs them.
The demo sends invoices through the HTTP API, follows each job to its end beside the worker's log lines, shows
invoice 13's job being retried and failing, and lists it with `scalr-queue failed list`.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
from stack import LocalStack, say

INVOICES = (1, 2, 3, 13)  # invoice 13's mail server refuses mail (see template-app/backend/src/worker.py)


async def wait_ready(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            response = await http.get("/health/ready")
            if response.status_code == 200 and response.json()["workers"] >= 1:
                say("demo", f"GET /health/ready → {response.json()}")
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the backend did not become ready within 30 s")


async def send(http: httpx.AsyncClient, invoice_id: int) -> str:
    sent = await http.post(f"/invoices/{invoice_id}/send")
    job_id = str(sent.json()["job_id"])
    say("demo", f"POST /invoices/{invoice_id}/send → {sent.status_code} {sent.json()}")
    seen: list[str] = []
    while True:
        body = (await http.get(f"/jobs/{job_id}")).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("complete", "failed"):
            outcome = body.get("result") or body.get("error")
            say("demo", f"invoice {invoice_id}: job {job_id[:8]} {' → '.join(seen)}: {outcome}")
            return str(body["status"])
        await asyncio.sleep(0.05)


async def web_side(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url) as http:
        await wait_ready(http)
        return list(await asyncio.gather(*(send(http, invoice_id) for invoice_id in INVOICES)))


def main() -> int:
    # The failing job gets three tries, half a second apart, so the demo shows the retries and ends quickly.
    with LocalStack(SCALR_QUEUE_MAX_TRIES="3", SCALR_QUEUE_BACKOFF="0.5") as stack:
        outcomes = asyncio.run(web_side(stack.url))
        listing = stack.run("scalr-queue", "failed", "list")
        say("demo", "$ scalr-queue failed list")
        for line in listing.stdout.splitlines():
            say("demo", line)
    worker_exit = stack.processes["worker"].returncode
    say("demo", f"worker exited with code {worker_exit}")
    return 0 if outcomes == ["complete", "complete", "complete", "failed"] and worker_exit == 0 else 1


if __name__ == "__main__":
    started_at = time.monotonic()
    code = main()
    say("demo", f"done in {time.monotonic() - started_at:.1f} s, exit code {code}")
    sys.exit(code)
