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
CLAIM_SCAN_LIMIT = 1000  # due ids looked at per claim: running jobs sit at the front of the queue

# Claim up to ARGV[2] due jobs in one call: each claim is arq's in-progress key, set only if absent (a lease).
# Nothing is claimed while the queue is paused (KEYS[2]).
_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local claimed = {}
local want = 2 * tonumber(ARGV[2])
for i = 1, #due, 2 do
  if redis.call('SET', ARGV[3] .. due[i], '1', 'NX', 'PX', ARGV[5]) then
    claimed[#claimed + 1] = due[i]
    claimed[#claimed + 1] = due[i + 1]
    if #claimed >= want then break end
  end
end
return claimed
"""


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
        self._slot_freed = asyncio.Event()
        self._claim_script: Any = None

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

    # --- claiming jobs --------------------------------------------------------------------------------------

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim due jobs in batches, one script call each, as slots free up.

        arq claims one id at a time (WATCH, EXISTS, ZSCORE, MULTI) from a list every worker read at once, so
        workers mostly lose races to each other, and it waits out its poll delay whenever its slots are full.
        Here a batch claim takes only what is free, and a slot freeing within the poll delay is refilled at
        once. The loop hands back to arq's poll loop (heartbeat, cron) at least every poll delay.
        """
        if not job_ids:
            return  # arq's look at the queue found nothing due
        until = time.monotonic() + self.poll_delay_s
        while self.allow_pick_jobs:
            free = self.max_jobs - self.job_counter
            if free <= 0:
                self._slot_freed.clear()
                left = until - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), left)
                continue
            claimed = await self._claim(free)
            for job_id, score in claimed:
                self._start(job_id, score)
            if len(claimed) < free or time.monotonic() >= until:
                return

    async def _claim(self, count: int) -> list[tuple[str, int]]:
        if self._claim_script is None:
            self._claim_script = self.pool.register_script(_CLAIM_LUA)
        now_ms = int(time.time() * 1000)
        flat = await self._claim_script(
            keys=[self.queue_name, keys.paused_key(self.queue_name)],
            args=[now_ms, count, keys.IN_PROGRESS_PREFIX, CLAIM_SCAN_LIMIT, int(self.lease_s * 1000)],
        )
        claimed = [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        if self._not_mine_until:
            now = time.monotonic()
            self._not_mine_until = {j: t for j, t in self._not_mine_until.items() if t > now}
            mine = [(j, s) for j, s in claimed if j not in self._not_mine_until]
            if len(mine) < len(claimed):  # hand jobs of unknown tasks straight back, for a newer worker
                await self.pool.delete(
                    *[keys.in_progress_key(j) for j, _ in claimed if j in self._not_mine_until]
                )
            claimed = mine
        return claimed

    def _start(self, job_id: str, score: int) -> None:
        self.job_counter += 1
        task = self.loop.create_task(self.run_job(job_id, score))
        task.add_done_callback(self._job_done)
        self.tasks[job_id] = task

    def _job_done(self, _: asyncio.Task[Any]) -> None:
        self.job_counter -= 1
        self._slot_freed.set()

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
