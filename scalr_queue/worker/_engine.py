"""scalr_queue's Worker: arq's own, extended through its methods where arq leaves jobs to chance.

- A claim on a running job is a short lease (``SCALR_QUEUE_LEASE``, 10 s) that the live worker renews, so the
  jobs of a worker that died (SIGKILL, OOM) run again within seconds instead of after timeout + 10 s.
- SIGTERM stops taking jobs, lets running ones finish within ``SCALR_QUEUE_SHUTDOWN_GRACE``, then cancels the
  rest, which arq re-queues at once; the cancelled try is handed back, so deploys do not use up tries.
- A Redis outage is waited out with backoff instead of ending the process.
- A job for a task this worker does not know is put back for the rollout window, for a newer worker.
- Failures that happen before a task runs (unknown task, undecodable payload, expired, a job that killed its
  worker on every try) are written to the failed store with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any

from arq.worker import Worker

from .. import keys, wire
from ..config import Settings
from ..connection import REDIS_DOWN_ERRORS
from ..execution import STATE_KEY, WorkerState
from ..failed import FailedJob, FailureReason, iso_ms, now_iso
from ..logs import get_logger

log = get_logger("scalr_queue.worker")

ENGINE_CTX_KEY = "scalr_queue_engine"
ROLLOUT_RECHECK_S = (
    1.0  # how soon a job for an unknown task is offered again (to other workers) in the window
)
REDIS_RETRY_LIMIT_S = 60.0  # how long finishing a job waits for Redis before giving the job up to its lease
PREVIEW_BYTES = 120


class ScalrWorker(Worker):
    """arq's ``Worker`` with leases, a graceful stop, outage handling, a rollout window and the failed store."""

    def __init__(self, *, settings: Settings, **options: Any) -> None:
        options.setdefault("job_completion_wait", settings.shutdown_grace)
        super().__init__(**options)
        self.settings = settings
        self.lease_s = settings.lease
        self.in_progress_timeout_s = settings.lease  # arq's claim expiry, now renewed while the job runs
        self.ctx[ENGINE_CTX_KEY] = True
        self.stopping = False
        self._redis_down_since: float | None = None
        self._outage_backoff_s = 0.1
        # Jobs of tasks this worker does not know, left alone until the rollout window ends (job id -> time).
        self._not_mine_until: dict[str, float] = {}

    @property
    def state(self) -> WorkerState | None:
        state: WorkerState | None = self.ctx.get(STATE_KEY)
        return state

    # --- stopping -------------------------------------------------------------------------------------------

    def handle_sig(self, signum: Signals) -> None:
        self.stopping = True
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        self.stopping = True
        log.info(
            "worker_stopping",
            signal=Signals(signum).name,
            running=len(self.job_tasks),
            grace_s=self._job_completion_wait,
        )
        super().handle_sig_wait_for_completion(signum)

    # --- leases ---------------------------------------------------------------------------------------------

    async def main(self) -> None:
        renewer = asyncio.get_running_loop().create_task(self._renew_leases(), name="scalr_queue leases")
        try:
            await super().main()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew_leases(self) -> None:
        lease_ms = int(self.lease_s * 1000)
        while True:
            await asyncio.sleep(self.lease_s / 3)
            running = [job_id for job_id, t in self.tasks.items() if not t.done()]
            if not running:
                continue
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(keys.in_progress_key(job_id), lease_ms)
                    await pipe.execute()
            except REDIS_DOWN_ERRORS as exc:
                log.warning("lease_renewal_failed", jobs=len(running), error=str(exc) or type(exc).__name__)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if self._not_mine_until:
            now = time.monotonic()
            self._not_mine_until = {j: t for j, t in self._not_mine_until.items() if t > now}
            job_ids = [j for j in job_ids if j.decode() not in self._not_mine_until]
        await super().start_jobs(job_ids)

    # --- Redis outages --------------------------------------------------------------------------------------

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN_ERRORS as exc:
            if self._redis_down_since is None:
                self._redis_down_since = time.monotonic()
                log.warning("redis_unavailable", error=str(exc) or type(exc).__name__, action="reconnecting")
            await asyncio.sleep(self._outage_backoff_s)
            self._outage_backoff_s = min(self._outage_backoff_s * 2, 5.0)
        else:
            if self._redis_down_since is not None:
                log.info("redis_reconnected", outage_s=round(time.monotonic() - self._redis_down_since, 2))
                self._redis_down_since = None
                self._outage_backoff_s = 0.1

    async def _until_redis_answers(self, work: Callable[[], Awaitable[None]], job_id: str) -> None:
        """Run ``work``, retrying through a Redis outage; past the limit the job is left to its lease."""
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                await work()
                return
            except REDIS_DOWN_ERRORS as exc:
                if time.monotonic() - started > REDIS_RETRY_LIMIT_S:
                    log.error("job_not_finished", job_id=job_id, error=str(exc) or type(exc).__name__)
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # --- finishing jobs -------------------------------------------------------------------------------------

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        state = self.state
        failure = state.pending_failures.pop(job_id, None) if state else None
        # arq re-queues a job cancelled by shutdown at once; hand back the try it used.
        refund_try = self.stopping and not finish and incr_score is None

        async def work() -> None:
            if failure is not None and state is not None and state.failed_store is not None:
                await state.failed_store.record(failure)
            await Worker.finish_job(
                self,
                job_id,
                finish,
                result_data,
                result_timeout_s,
                keep_result_forever,
                incr_score,
                keep_in_progress,
            )
            if refund_try:
                await self.pool.decr(keys.retry_key(job_id))

        await self._until_redis_answers(work, job_id)
        if refund_try:
            log.info("job_requeued", job_id=job_id, reason="worker stopping")

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """A job failed before its task ran: put it back for the rollout window, or record why it failed."""
        info: dict[str, Any] = {}
        if result_data:
            with contextlib.suppress(ValueError):
                info = wire.loads(result_data)
        stored = info.get("r")
        error: dict[str, Any] = stored if isinstance(stored, dict) else {}
        error_type, message = str(error.get("type", "Error")), str(error.get("message", ""))
        reason = _reason(error_type, message)
        state = self.state
        queue = keys.queue_name(str(info.get("q") or self.queue_name))
        enqueue_ms = info.get("et")
        if reason is FailureReason.unknown_task and isinstance(enqueue_ms, int):
            left_s = self.settings.rollout_window - (time.time() * 1000 - enqueue_ms) / 1000
            if left_s > 0:
                self._not_mine_until[job_id] = time.monotonic() + left_s
                await self._until_redis_answers(
                    lambda: self._put_back(job_id, min(ROLLOUT_RECHECK_S, left_s)), job_id
                )
                log.warning(
                    "job_deferred_unknown_task",
                    job_id=job_id,
                    task=info.get("f"),
                    queue=queue,
                    rollout_window_left_s=round(left_s, 1),
                )
                return
        extra: dict[str, Any] = {}
        if reason is FailureReason.undecodable_payload:
            raw = await self.pool.get(keys.job_key(job_id))
            extra["payload_preview"] = repr(raw[:PREVIEW_BYTES]) if raw else None
        record = FailedJob(
            job_id=job_id,
            task=str(info.get("f", "<unknown>")),
            kwargs=kwargs if isinstance(kwargs := info.get("k"), dict) else {},
            queue=queue,
            tries=int(info.get("t") or 0),
            max_tries=self.max_tries,
            reason=reason.value,
            error_type=error_type,
            message=message,
            traceback=error.get("traceback"),
            enqueued_at=iso_ms(enqueue_ms) if isinstance(enqueue_ms, int) else None,
            failed_at=now_iso(),
            worker_id=state.worker_id if state else None,
            extra=extra,
        )
        log.error(
            "job_failed",
            job_id=job_id,
            task=record.task,
            queue=queue,
            reason=reason.value,
            error_type=error_type,
            error=message,
        )

        async def work() -> None:
            if state is not None and state.failed_store is not None:
                await state.failed_store.record(record)
            await Worker.finish_failed_job(self, job_id, result_data)

        await self._until_redis_answers(work, job_id)

    async def _put_back(self, job_id: str, delay_s: float) -> None:
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.delete(keys.in_progress_key(job_id))
            pipe.zadd(self.queue_name, {job_id: int((time.time() + delay_s) * 1000)}, xx=True)
            pipe.decr(keys.retry_key(job_id))  # looking at it was not a try
            await pipe.execute()

    async def close(self) -> None:
        try:
            await super().close()
        except REDIS_DOWN_ERRORS as exc:
            log.warning("worker_closed_without_redis", error=str(exc) or type(exc).__name__)
            if self._pool is not None:
                await self._pool.aclose(close_connection_pool=True)
                self._pool = None


def _reason(error_type: str, message: str) -> FailureReason:
    """Why arq failed a job before running it, from the error it recorded."""
    if error_type == "DeserializationError":
        return FailureReason.undecodable_payload
    if error_type == "CancelledError":
        return FailureReason.aborted
    if error_type == "JobExecutionFailed":
        if message.startswith("function ") and message.endswith(" not found"):
            return FailureReason.unknown_task
        if message == "job expired":
            return FailureReason.expired
        if "retries exceeded" in message:
            return FailureReason.max_tries_exceeded
    return FailureReason.raised
