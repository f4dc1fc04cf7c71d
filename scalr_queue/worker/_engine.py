"""scalr_queue's Worker: arq's own, extended through its methods where arq leaves jobs to chance.

- A claim on a running job is a short lease (``SCALR_QUEUE_LEASE``, 10 s) that the live worker renews, so the
  jobs of a worker that died (SIGKILL, OOM) run again within seconds instead of after timeout + 10 s.
- SIGTERM stops taking jobs, lets running ones finish within ``SCALR_QUEUE_SHUTDOWN_GRACE``, then cancels the
  rest, which arq re-queues at once; the cancelled try is handed back, so deploys do not use up tries.
- A Redis outage is waited out with backoff instead of ending the process.
- A job for a task this worker does not know is put back for the rollout window, for a newer worker.
- Failures that happen before a task runs (unknown task, undecodable payload, expired, a job that killed its
  worker on every try) are written to the failed store with the reason.
- Speed: jobs are claimed in batches with their payloads and tries (one script call, ``_claim.py``), finished in
  groups (one transaction for all jobs that ended meanwhile, ``_finish.py``), and an idle worker blocks on the
  queue's notify list, so a new job starts at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any

from arq.constants import abort_jobs_ss, keep_cronjob_progress
from arq.jobs import SerializationError, deserialize_job_raw, serialize_result
from arq.utils import ms_to_datetime, to_seconds, to_unix_ms
from arq.worker import JobExecutionFailed, Retry, Worker

from .. import keys, wire
from ..config import Settings
from ..connection import REDIS_DOWN_ERRORS
from ..execution import STATE_KEY, WorkerState
from ..failed import FailedJob, FailureReason, iso_ms, now_iso
from ..logs import get_logger
from ._claim import RETRY_KEY_TTL_S, Claimed, Claimer
from ._finish import Finish, FinishGroups, now_ms, result_ttl_ms

log = get_logger("scalr_queue.worker")

ENGINE_CTX_KEY = "scalr_queue_engine"
_NO_RESULT = object()
ROLLOUT_RECHECK_S = (
    1.0  # how soon a job for an unknown task is offered again (to other workers) in the window
)
REDIS_RETRY_LIMIT_S = 60.0  # how long finishing a job waits for Redis before giving the job up to its lease
PREVIEW_BYTES = 120
# Longest an idle worker blocks before it looks at the queue anyway: for jobs nobody announced (enqueued by plain
# arq, or a dead worker's job whose lease ran out). 3 s keeps an idle worker's Redis load below arq's polling.
IDLE_WAIT_S = 3.0
STOPPING_TICK_S = 0.05  # how often a stopping worker's loop turns while running jobs finish


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
        self._claimer: Claimer | None = None
        self._idle = False
        self._upcoming_ms: int | None = None
        # arq's loop sleeps its poll delay between turns; ours blocks on the notify list instead, for at most this.
        self.idle_wait_s = to_seconds(options.get("poll_delay")) or IDLE_WAIT_S
        self.poll_delay_s = 0
        self._finishes = FinishGroups(
            lambda: self.pool,
            lambda: self.state.failed_store if self.state else None,
            self._until_redis_answers,
        )

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

    # --- claiming and running jobs -------------------------------------------------------------------------

    async def _poll_iteration(self) -> None:
        """One turn of arq's loop: fill free slots, reap finished tasks, beat, then wait for work if idle."""
        try:
            if self.allow_pick_jobs and self._burst_allows():
                await self._fill_slots()
            if self.allow_abort_jobs:
                await self._cancel_aborted_jobs()
            for job_id, task in list(self.tasks.items()):
                if task.done():
                    del self.tasks[job_id]
                    task.result()  # an error of our own run path surfaces here, as in arq
            await self.heart_beat()
            if not self.allow_pick_jobs:
                await asyncio.sleep(STOPPING_TICK_S)  # stopping: the loop has nothing to claim; do not spin
            elif self._idle:
                await self._wait_for_work()
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

    def _burst_allows(self) -> bool:
        return not (self.burst and 0 <= self.max_burst_jobs <= self._jobs_started())

    async def _fill_slots(self) -> None:
        """Claim due jobs in batches as slots free up; hand back to the loop (heartbeat, cron) now and then."""
        deadline = time.monotonic() + self.idle_wait_s
        while self.allow_pick_jobs:
            free = self.max_jobs - self.job_counter
            if self.burst and self.max_burst_jobs >= 0:
                free = min(free, self.max_burst_jobs - self._jobs_started())
            if free <= 0:
                self._idle = False
                self._slot_freed.clear()
                left = deadline - time.monotonic()
                if left <= 0 or not self._burst_allows():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), left)
                continue
            if self._claimer is None:
                self._claimer = Claimer(self.pool, self.queue_name, self.lease_s)
            claimed, self._upcoming_ms = await self._claimer.claim(free)
            mine = await self._skip_unknown_tasks(claimed)
            for job in mine:
                self._start(job)
            if len(claimed) < free:
                self._idle = True
                return
            if time.monotonic() >= deadline:
                self._idle = False
                return

    async def _wait_for_work(self) -> None:
        """Block on the notify list until a job is enqueued, the next deferred job is due, or the idle wait ends."""
        timeout = self.idle_wait_s
        due = [self._upcoming_ms] if self._upcoming_ms is not None else []
        due += [to_unix_ms(cj.next_run) for cj in self.cron_jobs if cj.next_run is not None]
        if due:
            timeout = min(timeout, (min(due) - time.time() * 1000) / 1000)
        if self.burst:
            timeout = min(timeout, 0.01)
        if timeout < 0.005:
            return
        if self.burst:
            await asyncio.sleep(timeout)
            return
        # BLPOP takes fractional seconds (Redis >= 6); redis-py's hint says int.
        await self.pool.execute_command("BLPOP", keys.notify_key(self.queue_name), f"{timeout:.3f}")  # type: ignore[no-untyped-call]

    async def _skip_unknown_tasks(self, claimed: list[Claimed]) -> list[Claimed]:
        """Hand jobs of tasks this worker does not know straight back, during the rollout window."""
        if not self._not_mine_until:
            return claimed
        now = time.monotonic()
        self._not_mine_until = {j: t for j, t in self._not_mine_until.items() if t > now}
        theirs = [job for job in claimed if job.job_id in self._not_mine_until]
        if theirs:
            async with self.pool.pipeline(transaction=True) as pipe:
                for job in theirs:
                    pipe.delete(keys.in_progress_key(job.job_id))
                    pipe.decr(keys.retry_key(job.job_id))
                await pipe.execute()
        return [job for job in claimed if job.job_id not in self._not_mine_until]

    def _start(self, job: Claimed) -> None:
        self.job_counter += 1
        task = self.loop.create_task(self._run(job))
        task.add_done_callback(self._job_done)
        self.tasks[job.job_id] = task

    def _job_done(self, _: asyncio.Task[Any]) -> None:
        self.job_counter -= 1
        self._slot_freed.set()

    async def _run(self, job: Claimed) -> None:
        """Run one claimed job as arq's ``run_job`` would, then finish it in the next group write."""
        job_id, score, job_try = job.job_id, job.score, job.job_try
        start_ms = now_ms()
        if job.payload is None:
            return await self._fail_early(job_id, job_try, start_ms, JobExecutionFailed("job expired"))
        try:
            name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
                job.payload, deserializer=self.job_deserializer
            )
        except SerializationError as exc:
            return await self._fail_early(job_id, job_try, start_ms, exc)
        early = functools.partial(
            self._fail_early, job_id, job_try, start_ms, name=name, kwargs=kwargs, enqueue_ms=enqueue_ms
        )
        if self.allow_abort_jobs and await self.pool.zrem(abort_jobs_ss, job_id):
            return await early(asyncio.CancelledError())
        function = self.functions.get(name)
        if function is None:
            return await early(JobExecutionFailed(f"function {name!r} not found"))
        if enqueue_try and enqueue_try > job_try:
            job_try = enqueue_try
            await self.pool.setex(keys.retry_key(job_id), RETRY_KEY_TTL_S, str(job_try))
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            return await early(JobExecutionFailed(f"max {max_tries} retries exceeded"))
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_ms),
            "score": score,
        }
        if self.on_job_start:
            await self.on_job_start(ctx)
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        result: Any = _NO_RESULT
        finish = success = False
        incr_score: int | None = None
        self.job_tasks[job_id] = asyncio.current_task()  # type: ignore[assignment]  # what an abort cancels
        try:
            async with asyncio.timeout(timeout_s):
                result = await function.coroutine(ctx, *args, **kwargs)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, Retry):
                incr_score = exc.defer_score + (now_ms() - score) if exc.defer_score else None
                self.jobs_retried += 1
            elif isinstance(exc, asyncio.CancelledError) and job_id in self.aborting_tasks:
                result, finish = exc, True
                self.aborting_tasks.remove(job_id)
                self.jobs_failed += 1
            elif isinstance(exc, asyncio.CancelledError):
                self.jobs_retried += 1  # shutdown: queued again as it is
            else:
                result, finish = exc, True
                self.jobs_failed += 1
        else:
            success = finish = True
            self.jobs_complete += 1
        finally:
            self.job_tasks.pop(job_id, None)
        keep_forever = (
            self.keep_result_forever if function.keep_result_forever is None else function.keep_result_forever
        )
        keep_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        result_data = None
        if result is not _NO_RESULT and (keep_forever or keep_s > 0):
            result_data = serialize_result(
                name, args, kwargs, job_try, enqueue_ms, success, result, start_ms, now_ms(), f"{job_id}:{name}",
                self.queue_name, job_id=job_id, serializer=self.job_serializer,
            )  # fmt: skip
        if self.on_job_end:
            await self.on_job_end(ctx)
        if incr_score is not None:
            due = score + incr_score
            self._upcoming_ms = due if self._upcoming_ms is None else min(self._upcoming_ms, due)
        state = self.state
        item = Finish(
            job_id=job_id,
            queue_key=self.queue_name,
            finish=finish,
            result_data=result_data,
            result_ttl_ms=result_ttl_ms(bool(keep_forever), keep_s),
            incr_score=incr_score,
            keep_in_progress_ms=int(keep_cronjob_progress * 1000) if hasattr(function, "next_run") else None,
            failure=state.pending_failures.pop(job_id, None) if state else None,
            refund_try=self.stopping and not finish and incr_score is None,
        )
        await asyncio.shield(self._finishes.finish(item))
        if item.refund_try:
            log.info("job_requeued", job_id=job_id, reason="worker stopping")
        if self.after_job_end:
            await self.after_job_end(ctx)
        return None

    async def _fail_early(
        self,
        job_id: str,
        job_try: int,
        start_ms: int,
        error: BaseException,
        *,
        name: str = "<unknown>",
        kwargs: dict[str, Any] | None = None,
        enqueue_ms: int = 0,
    ) -> None:
        """The job cannot run: record it as arq would, through ``finish_failed_job`` (rollout window, store)."""
        self.jobs_failed += 1
        result_data = serialize_result(
            name, (), kwargs or {}, job_try, enqueue_ms, False, error, start_ms, now_ms(), f"{job_id}:{name}",
            self.queue_name, job_id=job_id, serializer=self.job_serializer,
        )  # fmt: skip
        await asyncio.shield(self.finish_failed_job(job_id, result_data))

    # --- Redis outages ---------------------------------------------------------------------------------------

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
            pipe.rpush(keys.notify_key(self.queue_name), "1")  # wake an idle worker: it may know the task
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
