"""The web process: `uvicorn src.main:app`. Handlers enqueue and return at once; the worker does the work."""

from typing import Any

from fastapi import FastAPI, HTTPException

from scalr_queue import Job, JobFailedError, JobStatus, enqueue
from scalr_queue.fastapi import health_router, install_error_handler, lifespan

from .worker import send_invoice_email

app = FastAPI(title="myapp", lifespan=lifespan())  # opens the job queue's pool, closes it at shutdown
install_error_handler(app)  # Redis down: 503 with Retry-After instead of a 500
app.include_router(
    health_router(path="/health/ready")
)  # readiness: Redis reachable, queue depth, live workers


@app.post("/invoices/{invoice_id}/send")
async def send_invoice(invoice_id: int) -> dict[str, str]:
    job = await enqueue(send_invoice_email, invoice_id=invoice_id)  # the function: name and arguments checked
    assert job is not None  # only a duplicate _job_id returns None
    return {"job_id": job.job_id}


@app.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, Any]:
    job = Job(job_id)
    status = await job.status()
    if status is JobStatus.not_found:
        raise HTTPException(404, f"no job {job_id} (never queued, or its result has expired)")
    body: dict[str, Any] = {"job_id": job_id, "status": status.value}
    if status is JobStatus.complete:
        body["result"] = await job.result(timeout=0)
    elif status is JobStatus.failed:
        try:
            await job.result(timeout=0)
        except JobFailedError as exc:
            body["error"] = {"type": exc.error_type, "message": exc.message}
    return body
