"""scalr_queue's Worker: arq's data model and options, our own loop, built from arq's public parts only.

The loop claims due jobs into free slots (``_claim.py``), hands each to the runner (``runner.py``), which decides
its outcome, and writes outcomes in groups (``_finish.py``). Around it: leases renewed while jobs run and taken
back after an outage, a wake-up listener and timers so that a job starts when it is due, cron runs queued ahead
of their time, a heartbeat, and a stop that is a state the loop checks (``_stop.py``).

The class takes arq ``Worker``'s keyword options, so a WorkerSettings written for arq runs here; arq's own test
suite runs against it (tests/test_arq_suite.py) and its differences are listed in docs/arq-compatibility.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, tzinfo
from signal import Signals
from typing import Any

from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.jobs import JobResult
from arq.worker import FailedJobs
from redis.exceptions import RedisError

from .. import keys, metrics, wire
from .._lane import Lane, lane_for
from .._lua import scripts
from ..config import Settings, get_settings
from ..connection import create_redis, describe, redis_info
from ..exceptions import WorkerSettingsError
from ..failed import FailedJob
from ..health import Heartbeat, WorkerState, new_worker_id
from ..logs import get_logger
from ..outcome import Aborted, Failed, Outcome, Released, ReleaseReason, RetryIn, Succeeded
from ..records import PICKLE_MARK
from ..registry import publish_tasks
from ..runner import Attempt, CancelReason, Middleware, Runner, TaskPlan, now_ms, plan_for
from ..tasks import Task, as_task, cron_task, to_seconds
from . import _arq_lines
from ._background import LagMonitor, LeaseKeeper, Outage, WakeListener
from ._claim import Batch, Claimed, Claimer
from ._cron import CronScheduler
from ._finish import Finisher, FinishNotWritten, Write, WriteContext, taken_back, unique_key_of, write_for
from ._stop import StopState, cancel_until_done, start_watchdog

log = get_logger("scalr_queue.worker")

Hook = Callable[[dict[str, Any]], Awaitable[Any]]

IDLE_WAIT_S = 3.0  # longest an idle worker waits before looking at the queue anyway (jobs nobody announced)
MIN_WAIT_S = 0.001
CANCEL_WAIT_S = 5.0  # after the grace, how long cancelled jobs get to end before the worker gives up on them
FLUSH_S = 5.0  # and how long their outcomes get to be written
ABORT_POLL_S = 0.5  # how often a worker with running jobs looks for aborts
ARQ_HEALTH_CHECK_INTERVAL_S = 30
OUTAGE_BACKOFF_CAP_S = 5.0


class Worker:
    """Runs jobs from one queue; takes arq ``Worker``'s keyword options plus scalr_queue's ``settings``."""

    def __init__(
        self,
        functions: Sequence[Any] = (),
        *,
        queue_name: str | None = None,
        cron_jobs: Sequence[CronJob] | None = None,
        redis_settings: RedisSettings | None = None,
        redis_pool: Any = None,
        burst: bool = False,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        on_job_start: Hook | None = None,
        on_job_end: Hook | None = None,
        after_job_end: Hook | None = None,
        handle_signals: bool = True,
        job_completion_wait: float | None = None,
        max_jobs: int | None = None,
        job_timeout: float | timedelta | None = None,
        keep_result: float | timedelta | None = None,
        keep_result_forever: bool = False,
        poll_delay: float | timedelta | None = None,
        queue_read_limit: int | None = None,
        max_tries: int | None = None,
        health_check_interval: float | timedelta | None = None,
        health_check_key: str | None = None,
        ctx: dict[Any, Any] | None = None,
        retry_jobs: bool = True,
        allow_abort_jobs: bool = False,
        max_burst_jobs: int = -1,
        job_serializer: Any = None,
        job_deserializer: Any = None,
        expires_extra_ms: int | None = None,
        timezone: tzinfo | None = None,
        log_results: bool = True,
        settings: Settings | None = None,
        middleware: Sequence[Middleware] = (),
        exit_watchdog: bool = False,
    ) -> None:
        settings = settings or get_settings()
        for name, value in (("job_serializer", job_serializer), ("job_deserializer", job_deserializer)):
            if value is not None and value not in (wire.dumps, wire.loads):
                raise WorkerSettingsError(
                    f"{name} is not supported: scalr_queue always stores jobs as JSON (no pickle, no msgpack)"
                )
        if queue_name is None:
            queue_name = getattr(redis_pool, "default_queue_name", None) or settings.name
        self.settings = settings
        self.queue_name = keys.queue_key(queue_name)
        self.burst = burst
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.on_job_start = on_job_start
        self.on_job_end = on_job_end
        self.after_job_end = after_job_end
        self.max_jobs = settings.concurrency if max_jobs is None else max_jobs
        self.job_timeout_s = to_seconds(job_timeout) or settings.job_timeout
        self.keep_result_s = settings.keep_result if keep_result is None else to_seconds(keep_result) or 0.0
        self.keep_result_forever = keep_result_forever
        self.poll_delay_s = to_seconds(poll_delay)
        self.idle_wait_s = max(self.poll_delay_s, 0.05) if self.poll_delay_s is not None else IDLE_WAIT_S
        self.queue_read_limit = queue_read_limit or max(self.max_jobs * 5, 100)
        self.max_tries = settings.max_tries if max_tries is None else max_tries
        self.health_check_interval = (
            ARQ_HEALTH_CHECK_INTERVAL_S
            if health_check_interval is None
            else to_seconds(health_check_interval) or 0.0
        )
        self.health_check_key = health_check_key or keys.arq_health_check_key(self.queue_name)
        self.ctx: dict[Any, Any] = ctx if ctx is not None else {}
        self.retry_jobs = retry_jobs
        self.allow_abort_jobs = allow_abort_jobs
        self.max_burst_jobs = max_burst_jobs
        self.expires_extra_ms = expires_extra_ms
        self.log_results = log_results
        self.timezone = datetime.now().astimezone().tzinfo if timezone is None else timezone
        self.job_completion_wait = (
            settings.shutdown_grace if job_completion_wait is None else job_completion_wait
        )
        self.lease_s = settings.lease
        self._handle_signals = handle_signals
        self._exit_watchdog = exit_watchdog
        self._watchdog: threading.Event | None = None  # set: the stop is done, the watchdog stands down
        self._redis_settings = redis_settings
        self._redis: Any = redis_pool
        self._owns_pool = redis_pool is None

        self.cron_jobs: list[CronJob] = list(cron_jobs or [])
        if any(not isinstance(cj, CronJob) for cj in self.cron_jobs):
            raise WorkerSettingsError("cron_jobs must hold arq cron(...) entries")
        self.functions: dict[str, Any] = {}
        plans: dict[str, TaskPlan] = {}
        for entry in functions:
            t = as_task(entry)
            plans[t.name] = self._plan(t, is_cron=False)
            self.functions[t.name] = entry
        for cj in self.cron_jobs:
            t = cron_task(cj)
            plans[t.name] = self._plan(t, is_cron=True)
            self.functions[t.name] = cj
        if not plans:
            raise WorkerSettingsError(
                "a worker needs at least one task: functions = [...] or cron_jobs = [...]"
            )
        self.plans = plans
        self.middleware = tuple(middleware)

        # arq's counters and task maps, kept with arq's meaning
        self.jobs_complete = 0
        self.jobs_failed = 0
        self.jobs_retried = 0
        self.job_counter = 0
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.job_tasks: dict[str, asyncio.Task[Any]] = {}
        self.aborting_tasks: set[str] = set()
        self.main_task: asyncio.Task[None] | None = None
        self.allow_pick_jobs = True

        self.worker_id = new_worker_id()
        self.state = WorkerState(
            worker_id=self.worker_id, queue=self.queue_name, tasks=sorted(plans), lease_s=self.lease_s
        )
        self._attempts: dict[bytes, Attempt] = {}
        self._stop: StopState | None = None
        self._started = False
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._upcoming_s: float | None = None
        self._last_abort_poll = 0.0
        self._outage = Outage()
        self._outage_backoff_s = 0.1
        self._last_arq_health = 0.0
        self._arq_health_lines = _arq_lines.HealthLines()
        self._heartbeat: Heartbeat | None = None
        self._lane: Lane | None = None
        self._retiming = False
        self._nudge_wanted = False
        self._winding_down = False
        self._listening: asyncio.Task[None] | None = None
        self._signals_added: list[Signals] = []
        self._side_writes: set[asyncio.Task[bool]] = set()
        self._grace_s = 0.0
        self.runner: Runner | None = None
        self._metrics = settings.metrics_port is not None
        self.cron = CronScheduler(self.cron_jobs, self.timezone, self.queue_name)

    def _plan(self, t: Task[..., Any], *, is_cron: bool) -> TaskPlan:
        return plan_for(
            t,
            timeout_s=self.job_timeout_s,
            max_tries=self.max_tries,
            keep_result_s=self.keep_result_s,
            keep_result_forever=self.keep_result_forever,
            backoff=self.settings.default_backoff,
            is_cron=is_cron,
        )

    # --- arq's public surface -------------------------------------------------------------------------------

    @property
    def pool(self) -> Any:
        return self._redis

    def run(self) -> None:
        """Run until stopped (a signal, or an empty queue with ``burst``), then close; on uvloop if installed."""
        with asyncio.Runner(loop_factory=loop_factory(self.settings.event_loop)) as runner:
            try:
                runner.run(self.async_run())
            finally:
                runner.run(self.close())

    async def async_run(self) -> None:
        """Run in the running loop until stopped; does not close (``close()`` does)."""
        self.main_task = asyncio.get_running_loop().create_task(self.main())
        await self.main_task

    async def run_check(self, retry_jobs: bool | None = None, max_burst_jobs: int | None = None) -> int:
        """arq's: run in burst mode, raise ``FailedJobs`` if any job failed, else return how many completed."""
        if retry_jobs is not None:
            self.retry_jobs = retry_jobs
            if self.runner is not None:
                self.runner.retry_jobs = retry_jobs
        if max_burst_jobs is not None:
            self.max_burst_jobs = max_burst_jobs
        self.burst = True
        await self.async_run()
        if self.jobs_failed:
            results: list[JobResult] = [r for r in await self.pool.all_job_results() if not r.success]
            raise FailedJobs(self.jobs_failed, results)
        return self.jobs_complete

    def handle_sig(self, signum: Signals) -> None:
        """Stop now: running jobs are cancelled and queued again (their tries handed back)."""
        self._request_stop(Signals(signum), grace_s=0.0)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        """Stop taking jobs; running ones get ``job_completion_wait`` seconds, then are cancelled and queued again."""
        self._request_stop(Signals(signum), grace_s=self.job_completion_wait)

    async def start_jobs(self, job_ids: Sequence[bytes | str]) -> None:
        """arq's: claim and start these queued, due jobs."""
        await self._start()
        assert self._claimer is not None
        self._start_claimed(await self._claimer.claim_ids(list(job_ids)))

    async def run_cron(self, n: datetime, delay: float = 0.0) -> None:
        """Queue the cron runs that come due around ``n`` (an aware datetime)."""
        for cron_job in self.cron.due(n):
            stored = await self.cron.queue_run(self.pool, cron_job, n)
            if stored:
                log.info("cron_queued", task=cron_job.name)

    def __repr__(self) -> str:
        return (
            f"<Worker j_complete={self.jobs_complete} j_failed={self.jobs_failed} j_retried={self.jobs_retried} "
            f"j_ongoing={sum(not t.done() for t in self.tasks.values())}>"
        )

    # --- start ------------------------------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if (
            self.burst
        ):  # cron runs queued when due, not ahead: an empty queue between ticks ends a burst (arq's rule)
            self.cron.lookahead_s = 0.0
        self._stop = StopState()
        self._wake = asyncio.Event()
        if self._redis is None:
            url_settings = self.settings
            if self._redis_settings is not None:
                from ._settings import redis_url_from_settings

                url_settings = self.settings.model_copy(
                    update={"redis_url": redis_url_from_settings(self._redis_settings)}
                )
            self._redis = create_redis(url_settings)
        self.ctx["redis"] = self._redis
        self.ctx["scalr_queue"] = self.state
        self._lane = lane_for(self._redis)  # claims and finishes: the hot path's own connections
        self._claimer = Claimer(self._redis, self.queue_name, self.lease_s, self.worker_id, self._lane)
        write_ctx = WriteContext(
            self.queue_name,
            self.worker_id,
            int(self.lease_s * 1000),
            keep_result_ms=None if self.keep_result_forever else int(self.keep_result_s * 1000),
        )
        self._write_ctx = write_ctx
        self._finisher = Finisher(
            self._redis,
            write_ctx,
            failed_max_age_s=self.settings.failed_max_age,
            failed_max_count=self.settings.failed_max_count,
            give_up_at=lambda: self._stop.deadline if self._stop else None,
            lane=self._lane,
        )
        self.runner = Runner(
            self.plans,
            queue=keys.queue_name(self.queue_name),
            rollout_window_s=0.0 if self.burst else self.settings.rollout_window,
            retry_jobs=self.retry_jobs,
            middleware=self.middleware,
            on_job_start=self.on_job_start,
            on_job_end=self.on_job_end,
            log_results=self.log_results,
        )
        if self._handle_signals:
            self._add_signal_handlers()
        if self.on_startup is not None:
            await self.on_startup(self.ctx)
        self._heartbeat = Heartbeat(self._redis, self.state, self.settings.health_interval)
        await self._heartbeat.start()
        await self._announce()
        loop = asyncio.get_running_loop()
        # Only tries still running: once a try's outcome is decided, its write proves the job is ours by the try
        # counter, and renewing could re-create the lease of a job that write just queued again.
        self._leases = LeaseKeeper(
            self._redis,
            self.worker_id,
            self.lease_s,
            lambda: {raw: a for raw, a in self._attempts.items() if a.outcome is None},
        )
        self._listener = WakeListener(
            self._redis,
            self.queue_name,
            self.idle_wait_s,
            self._outage,
            self._claimer,
            self._free_slots,
            self._start_listened,
            self.worker_id,
        )
        self._lag = LagMonitor(lambda: self._attempts)
        self._listening = loop.create_task(
            self._listener.run(self._stop, self._wake_up), name="scalr_queue wake-ups"
        )
        self._background = [
            loop.create_task(self._leases.run(self._stop), name="scalr_queue leases"),
            self._listening,
            loop.create_task(self._lag.run(self._stop), name="scalr_queue loop watch"),
        ]

    async def _announce(self) -> None:
        """Say who we are, publish the task registry, and warn about what would lose or strand jobs."""
        info: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # INFO is @dangerous: a least-privilege user may not have it
            info = await redis_info(self._redis)
        log.info(
            "worker_started",
            worker_id=self.worker_id,
            queue=keys.queue_name(self.queue_name),
            tasks=sorted(self.plans),
            concurrency=self.max_jobs,
            redis_url=describe(self.settings),
            redis_version=info.get("redis_version"),
        )
        if self._arq_lines():
            _arq_lines.starting(self.plans)
        with contextlib.suppress(RedisError, OSError):  # producers then check nothing: no reason to stop
            await publish_tasks(self._redis, keys.queue_name(self.queue_name), self.plans.values())
        await _warn_if_evicting(self._redis)
        await self._warn_about_other_queues()

    async def _warn_about_other_queues(self) -> None:
        """Jobs waiting on arq's own default key are jobs a plain arq producer sent: none of our workers runs them
        unless told. Say what to do, looking at one of them: pickled jobs must be migrated, not served."""
        if self.queue_name == keys.ARQ_DEFAULT_QUEUE:
            return
        with contextlib.suppress(Exception):
            waiting = await self._redis.zcard(keys.ARQ_DEFAULT_QUEUE)
            if not waiting:
                return
            sample = await self._redis.zrange(keys.ARQ_DEFAULT_QUEUE, 0, 0)
            raw = await self._redis.get(keys.JOB_PREFIX.encode() + sample[0]) if sample else None
            pickled = isinstance(raw, bytes) and raw.startswith(PICKLE_MARK)
            here = keys.queue_name(self.queue_name)
            move = f"`scalr-queue migrate arq:queue --to {here}{' --unpickle' if pickled else ''}`"
            log.warning(
                "jobs_waiting_on_arq_default_queue",
                queue_key=keys.ARQ_DEFAULT_QUEUE,
                jobs=waiting,
                pickled=pickled,
                serving=self.queue_name,
                fix=f"a plain arq producer enqueued them (pickled: scalr_queue never unpickles): move them with {move}"
                if pickled
                else f"a plain arq producer enqueued them: serve that key (--queue arq:queue) or move them with {move}",
                docs="docs/migrating.md",
            )

    def _add_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.handle_sig_wait_for_completion, sig)
                self._signals_added.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread, or Windows
                pass

    # --- the loop -----------------------------------------------------------------------------------------------

    async def main(self) -> None:
        """Claim and run jobs until stopped (or, with ``burst``, until the queue is empty)."""
        await self._start()
        assert self._stop is not None
        assert self._wake is not None
        stop, wake = self._stop, self._wake
        while not stop.requested:
            wake.clear()
            idle = await self._turn()
            if self.burst and await self._burst_done():
                break
            if not stop.requested:
                await self._wait(idle)
        await self._wind_down()

    async def _turn(self) -> bool:
        """One look at the queue: due cron runs, aborts, then claims for the free slots. True if nothing more is due."""
        try:
            await self._side_duties()
            idle = await self._fill()
        except (
            RedisError,
            OSError,
            TimeoutError,
        ) as exc:  # Redis down, full or refusing: never a worker's end
            self._outage.failed(exc)
            self._nudge_wanted = (
                True  # once it answers: look at once (leases to take back), not at the next token
            )
            await self._sleep(self._outage_backoff_s)
            self._outage_backoff_s = min(self._outage_backoff_s * 2, OUTAGE_BACKOFF_CAP_S)
            return False
        self._outage.answered()
        self._outage_backoff_s = 0.1
        return idle

    async def _side_duties(self) -> None:
        """Cron runs due, aborts, arq's health key: each may fail alone (a full Redis refuses the writes) without
        stopping the worker from claiming and finishing jobs, which is what frees a full Redis."""
        try:
            if self.cron_jobs:
                when = self.cron.next_queue_time()
                if when is None or when <= time.time():
                    await self.run_cron(self.cron.local_now())
            if self._attempts and time.monotonic() - self._last_abort_poll >= ABORT_POLL_S:
                await self._poll_aborts()
            await self._arq_health()
        except RedisError as exc:  # a full Redis refuses these writes: claiming and finishing go on
            self._outage.failed(exc)

    async def _fill(self) -> bool:
        """Claim due jobs into the free slots; True when the queue had fewer due than asked (or is paused)."""
        assert self._claimer is not None
        while True:
            if self._listener.reserved:  # a claim of the listener's waits behind its BLPOP
                # Run it now when a timer says a deferred job is due, or after an outage; a freed slot or the idle
                # timer needs no claim: anything queued since the listener's last look comes with a token.
                due = self._upcoming_s is not None and self._upcoming_s <= time.time()
                if due or self._nudge_wanted:
                    self._nudge_wanted = False
                    await self._listener.nudge()
                return True
            free = self._free_slots()
            if free <= 0:
                self._listener.idle.clear()
                return False
            batch = await self._claimer.claim(free)
            self._start_batch(batch)
            if len(batch.jobs) < free or batch.paused:
                self._listener.idle.set()
                return True

    def _start_batch(self, batch: Batch) -> None:
        """Start what a claim took (the main loop's, or the one sent with the listener's BLPOP)."""
        self._upcoming_s = None if batch.upcoming_ms is None else batch.upcoming_ms / 1000
        self._start_claimed(batch.jobs)

    async def _end_claim_ahead(self) -> None:
        """A claim waiting behind the listener's BLPOP runs now (a nudge) and its reply is read, its jobs put back,
        before the listener is cancelled: no job is left leased to a worker that has gone (a second at most)."""
        if not self._listener.reserved:
            return
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._listener.nudge()
                await self._listener.claim_read()
        if self._side_writes:  # the put-backs
            await asyncio.wait(set(self._side_writes), timeout=2.0)

    def _start_listened(self, batch: Batch, late_s: float) -> None:
        """Start what the listener's claim took; the main loop's wait then counts with them (abort polls).

        A reply read ``late_s`` after Redis ran the claim (a quarter lease, at most a second) means this worker's
        loop was blocked meanwhile, and Redis ran the claim for a worker that could not renew leases: nothing of
        it starts. Each job is put back, due now, its try handed back, for any worker to take; one of this
        worker's own running tries that the claim took again (its lease had lapsed) is then left to whoever takes
        it, and its outcome here is dropped, as after any blocked loop."""
        if self._winding_down:
            self._put_back(batch)
            return
        if late_s < min(self.lease_s / 4, 1.0):
            self._start_batch(batch)
            if batch.jobs:
                self._retime()
            return
        log.warning("claim_read_late", late_s=round(late_s, 2), jobs=len(batch.jobs), action="put back")
        self._put_back(batch)

    def _put_back(self, batch: Batch) -> None:
        """Each job of a claim not started: due now, its try handed back (the write checks the lease is ours)."""
        loop = asyncio.get_running_loop()
        for job in batch.jobs:
            write = Write("P", job.raw_id, now_ms(), job.job_try - 1, counter=job.job_try)
            side = loop.create_task(self._finisher.write(write))
            self._side_writes.add(side)
            side.add_done_callback(self._side_writes.discard)

    def _free_slots(self) -> int:
        """How many jobs a claim may take now."""
        if not self.allow_pick_jobs:
            return 0
        free = min(self.max_jobs - len(self._attempts), self.queue_read_limit)
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        return free

    def _start_claimed(self, claimed: Sequence[Claimed]) -> None:
        assert self.runner is not None
        loop = asyncio.get_running_loop()
        for job in claimed:
            mine = self._attempts.get(job.raw_id)
            if mine is not None:
                self._claimed_again(mine, job)
                continue
            attempt = Attempt(
                job.job_id, job.raw_id, job.score, job.job_try, job.payload, now_ms(), job.job_try
            )
            self.runner.prepare(
                attempt,
                corrupt=job.corrupt,
                aborted=job.aborted,
                dependency_failed=job.dependency_failed,
            )
            task = loop.create_task(self._process(attempt), name=f"scalr_queue job {job.job_id}")
            self.tasks[job.job_id] = task
            if (
                attempt.outcome is None
            ):  # decided already (undecodable, unknown task ...): written, takes no slot
                self._attempts[job.raw_id] = attempt
                self.job_counter += 1
                self.job_tasks[job.job_id] = task
                self.state.running[job.job_id] = attempt.task_name

    def _claimed_again(self, mine: Attempt, job: Claimed) -> None:
        """A job this worker holds a try of, claimed again. While that try runs, the claim came after an outage
        longer than the lease: keep the lease, hand the try back. Once the try has its outcome, the claim is the
        job's next try if that outcome's write (a retry, a put-back) came first: decided when the write is done."""
        loop = asyncio.get_running_loop()
        if mine.outcome is None:
            log.warning("lease_retaken", job_id=job.job_id, reason="claimed again after a Redis outage")
            side = loop.create_task(self._finisher.write(taken_back(mine, job.job_try, self._write_ctx)))
        else:
            side = loop.create_task(self._next_try_after(self.tasks.get(mine.job_id), job))
        self._side_writes.add(side)
        side.add_done_callback(self._side_writes.discard)

    async def _next_try_after(self, previous: asyncio.Task[Any] | None, job: Claimed) -> bool:
        """Start ``job`` once ``previous`` (its last try) has written its outcome, if the lease is still ours: the
        write came first and queued the job again. If it is gone, the write came second and queued (or ended)
        the job itself: the claim is dropped, and the try it counted was set back by that write."""
        if previous is not None:
            await asyncio.wait([previous])
        try:
            holder = await self._redis.get(keys.IN_PROGRESS_PREFIX.encode() + job.raw_id)
        except (RedisError, OSError):
            return False  # left to its lease
        if holder != self.worker_id.encode():
            return False
        if not self.allow_pick_jobs:  # stopping meanwhile: put it back, the try handed back
            return await self._finisher.write(
                Write("P", job.raw_id, now_ms(), job.job_try - 1, counter=job.job_try)
            )
        self._start_claimed([job])
        return True

    async def _process(self, attempt: Attempt) -> None:
        """Run one attempt (unless its outcome is decided already), write its outcome, free its slot."""
        assert self.runner is not None
        in_slot = attempt.outcome is None
        try:
            if in_slot and _unique_until_processing(attempt):
                await self._free_unique(attempt)
            outcome = attempt.outcome or await self.runner.run(attempt, self.ctx)
            self.job_tasks.pop(attempt.job_id, None)
            self.state.running.pop(attempt.job_id, None)
            self._count(outcome, attempt)
            if self._metrics:
                self._observe(attempt, outcome)
            write = write_for(attempt, outcome, self._write_ctx)
            if isinstance(outcome, RetryIn | Released) and outcome.seconds <= self.idle_wait_s:
                due = time.time() + outcome.seconds
                self._upcoming_s = due if self._upcoming_s is None else min(self._upcoming_s, due)
            try:
                held = await _shielded(self._finisher.submit(write))
            except FinishNotWritten:
                held = True
            if not held:
                log.error(
                    "job_outcome_dropped",
                    job_id=attempt.job_id,
                    task=attempt.task_name,
                    reason="another worker holds the job's lease now (this worker lost it during an outage)",
                )
            elif write.failure is not None:
                await self._on_failure(attempt, write.failure)
            if self.after_job_end is not None and attempt.started_ms:
                try:
                    await self.after_job_end(
                        {**self.ctx, "job_id": attempt.job_id, "job_try": attempt.job_try}
                    )
                except Exception as exc:
                    log.error("after_job_end_failed", error_type=type(exc).__name__, error=str(exc))
        except Exception:  # a bug of ours: the job is left to its lease and runs again
            log.exception("job_not_finished", job_id=attempt.job_id, task=attempt.task_name)
        finally:
            self.tasks.pop(attempt.job_id, None)
            self.job_tasks.pop(attempt.job_id, None)
            self.aborting_tasks.discard(attempt.job_id)
            self.state.running.pop(attempt.job_id, None)
            if in_slot:
                self._attempts.pop(attempt.raw_id, None)
                self.job_counter -= 1
                self._wake_up()  # a slot is free

    async def _free_unique(self, attempt: Attempt) -> None:
        """``unique_until_processing``: the job's unique key is freed as it starts (only if it still names this
        job), so the same job can be queued again while this one runs. A Redis error leaves the key to its TTL."""
        unique = unique_key_of(attempt)
        try:
            await scripts(self.pool).unique_release(keys=[unique], args=[attempt.job_id])
        except (RedisError, OSError) as exc:
            log.warning("unique_key_not_freed", job_id=attempt.job_id, key=unique, error=str(exc))

    async def _on_failure(self, attempt: Attempt, record: FailedJob) -> None:
        """The task's ``on_failure`` hook, once, after the failure record is written (by this worker alone: the
        write proved the job was this worker's). Its own errors are logged; they change nothing."""
        plan = attempt.plan
        hook = plan.task.options.on_failure if plan is not None else None
        if hook is None:
            return
        ctx = {**self.ctx, "job_id": attempt.job_id, "job_try": attempt.job_try}
        try:
            async with asyncio.timeout(plan.timeout_s if plan is not None else self.job_timeout_s):
                await hook(ctx, record)
        except Exception as exc:
            log.error(
                "on_failure_failed",
                job_id=attempt.job_id,
                task=attempt.task_name,
                error_type=type(exc).__name__,
                error=str(exc),
                exception="".join(traceback.format_exception(exc)),
            )

    def _observe(self, attempt: Attempt, outcome: Outcome) -> None:
        """Prometheus: the try's outcome, run time and wait; a task this worker does not run is "<unknown>" (the
        name came from Redis: as a label it would make the series unbounded)."""
        ran = attempt.started_ms > 0
        metrics.job_finished(
            keys.queue_name(self.queue_name),
            attempt.task_name if attempt.plan is not None else "<unknown>",
            _METRIC_OUTCOMES.get(type(outcome), "other"),
            (attempt.finished_ms - attempt.started_ms) / 1000 if ran else None,
            (attempt.started_ms - attempt.score) / 1000 if ran else None,
        )

    def _count(self, outcome: Outcome, attempt: Attempt) -> None:
        if isinstance(outcome, Succeeded):
            self.jobs_complete += 1
            self.state.succeeded += 1
        elif isinstance(outcome, Failed | Aborted):
            self.jobs_failed += 1
            self.state.failed += 1
        elif isinstance(outcome, RetryIn) or (
            isinstance(outcome, Released) and outcome.why == ReleaseReason.worker_stopping
        ):  # arq counts a try cut short by a stop as retried
            self.jobs_retried += 1
            self.state.retried += 1
        elif isinstance(outcome, Released):
            self.state.released += 1

    def _wake_up(self) -> None:
        """Wake the main loop for a turn (a token, a freed slot, a stop)."""
        if self._wake is not None:
            self._retiming = False
            self._wake.set()

    def _retime(self) -> None:
        """Have the main loop's wait start again with fresh timers (jobs started from the listener's claim need
        abort polls), without a turn of its own."""
        if self._wake is not None and not self._wake.is_set():
            self._retiming = True
            self._wake.set()

    async def _wait(self, idle: bool) -> None:
        """Until something may be due: a wake-up (token, slot freed, stop), the next due time, or the idle cap."""
        assert self._wake is not None
        while True:
            timeout = self._wait_timeout()
            if timeout < MIN_WAIT_S:
                await asyncio.sleep(
                    0
                )  # never a turn without yielding: the running jobs, which free slots, must run
                return
            self._retiming = False
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return
            if not self._retiming:
                return
            self._wake.clear()  # only the timers changed: wait again, with them

    def _wait_timeout(self) -> float:
        now = time.time()
        timeout = self.idle_wait_s
        slot_free = len(self._attempts) < self.max_jobs and self.allow_pick_jobs
        if self._upcoming_s is not None and slot_free:  # with every slot taken, a freed slot wakes the loop
            timeout = min(timeout, self._upcoming_s - now)
        if self.cron_jobs and (when := self.cron.next_queue_time()) is not None:
            timeout = min(timeout, when - now)
        if self._attempts:
            timeout = min(timeout, ABORT_POLL_S)
        if self.burst:
            timeout = min(timeout, 0.05)
        return timeout

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        if self._stop.requested:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.event.wait()

    async def _poll_aborts(self) -> None:
        """Cancel running jobs someone aborted (``arq:abort``); cheap: one ZMSCORE of the running ids."""
        self._last_abort_poll = time.monotonic()
        running = [a for a in self._attempts.values() if a.outcome is None and a.cancel_reason is None]
        if not running:
            return
        scores = await self._redis.zmscore(keys.ABORT_KEY, [a.raw_id for a in running])
        for attempt, score in zip(running, scores, strict=True):
            if score is None:
                continue
            attempt.cancel_reason = CancelReason.abort
            self.aborting_tasks.add(attempt.job_id)
            task = self.tasks.get(attempt.job_id)
            if task is not None and attempt.running:
                task.cancel()

    async def _arq_health(self) -> None:
        """arq's shared health key, refreshed now and then, so that ``arq --check`` works too."""
        now = time.time()
        if now - self._last_arq_health < self.health_check_interval:
            return
        self._last_arq_health = now
        queued = await self._redis.zcard(self.queue_name)
        info = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} j_failed={self.jobs_failed} "
            f"j_retried={self.jobs_retried} j_ongoing={len(self._attempts)} queued={queued}"
        )
        await self._redis.psetex(self.health_check_key, int((self.health_check_interval + 1) * 1000), info)
        self._arq_health_lines.recorded(info, log=self._arq_lines())

    def _jobs_started(self) -> int:
        return self.jobs_complete + self.jobs_retried + self.jobs_failed + len(self._attempts)

    async def _burst_done(self) -> bool:
        """arq's rule: a burst ends when its job budget is spent, or the queue is empty and nothing runs."""
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            return True
        if self._attempts:
            return False
        try:
            return bool(await self._redis.zcard(self.queue_name) == 0 or await self._paused())
        except (RedisError, OSError):
            return False

    async def _paused(self) -> bool:
        return bool(await self._redis.exists(keys.paused_key(self.queue_name)))

    # --- stop --------------------------------------------------------------------------------------------------

    def _request_stop(self, sig: Signals | None, *, grace_s: float) -> None:
        if self._stop is None:  # never started: nothing runs
            self._stop = StopState()
        budget = grace_s + CANCEL_WAIT_S + FLUSH_S
        first = self._stop.request(sig, budget)
        self.allow_pick_jobs = False
        self._grace_s = grace_s if first else 0.0
        self._wake_up()
        if not first:
            log.warning("worker_stopping_now", signal=sig.name if sig else None, running=len(self._attempts))
            return
        log.info(
            "worker_stopping",
            signal=sig.name if sig else None,
            running=len(self._attempts),
            grace_s=grace_s,
        )
        if sig is not None and self._arq_lines():
            self._arq_shutdown_line(sig.name, "to be completed" if grace_s > 0 else "ongoing to cancel")
        if self._exit_watchdog:
            self._watchdog = start_watchdog(budget + 10.0, "the worker did not stop within its grace period")

    async def _wind_down(self) -> None:
        """Let running jobs finish within the grace, cancel (and queue again) the rest, write every outcome."""
        assert self._stop is not None
        self._listener.idle.clear()
        self._winding_down = True
        if self._listening is not None:
            await self._end_claim_ahead()
            await cancel_until_done([self._listening], 2.0)
        pending: set[asyncio.Task[Any]] = {t for t in self.tasks.values() if not t.done()}
        deadline = time.monotonic() + (self._grace_s if self._stop.requested else 0.0)
        if pending and not self._stop.hurry:
            hurry: asyncio.Future[Any] = asyncio.ensure_future(self._stop.hurry_event.wait())
            while pending and not hurry.done() and (left := deadline - time.monotonic()) > 0:
                waiting: set[asyncio.Future[Any]] = {*pending, hurry}
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                pending = {t for t in pending if not t.done()}
            hurry.cancel()
        if self._grace_s > 0 and self._stop.signal is not None and self._arq_lines():
            self._arq_shutdown_line(f"{self._stop.signal.name}, wait complete", "ongoing to cancel")
        for attempt in self._attempts.values():
            if attempt.outcome is None and attempt.cancel_reason is None:
                attempt.cancel_reason = CancelReason.stop
        cancelling = [
            self.tasks[a.job_id] for a in self._attempts.values() if a.running and a.job_id in self.tasks
        ]
        if cancelling:
            stuck = await cancel_until_done(cancelling, CANCEL_WAIT_S)
            for task in stuck:
                log.error("job_not_cancellable", task=repr(task), action="left to its lease")
        rest = [t for t in self.tasks.values() if not t.done()]
        if rest:
            await asyncio.wait(rest, timeout=max(self._stop.left_s(), 0.1))

    def _arq_lines(self) -> bool:
        return _arq_lines.wanted(self.runner is None or self.runner.arq_lines)

    def _arq_shutdown_line(self, on: str, then: str) -> None:
        counts = (self.jobs_complete, self.jobs_failed, self.jobs_retried)
        _arq_lines.shutdown(on, counts, sum(not t.done() for t in self.tasks.values()), then)

    async def close(self) -> None:
        """Stop (if running), end the background tasks, say goodbye to Redis, run ``on_shutdown``."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        finally:
            if self._watchdog is not None:  # stopped: the process may go on (a script after run())
                self._watchdog.set()

    async def _close(self) -> None:
        if self._stop is None or not self._stop.requested:
            self._request_stop(None, grace_s=0.0)
        if self.main_task is not None and not self.main_task.done():
            await asyncio.wait([self.main_task], timeout=max(self._stop.left_s() if self._stop else 0, 1.0))
            await cancel_until_done([self.main_task], 1.0)
        elif self.tasks:
            await self._wind_down()
        await cancel_until_done(self._background, 2.0)
        loop = asyncio.get_running_loop()
        for sig in self._signals_added:
            loop.remove_signal_handler(sig)
        if self._redis is None or not self._started:
            return
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self.health_check_key)
        if self.on_shutdown is not None:
            await self.on_shutdown(self.ctx)
        log.info(
            "worker_stopped",
            worker_id=self.worker_id,
            succeeded=self.state.succeeded,
            failed=self.state.failed,
            retried=self.state.retried,
        )
        if self._lane is not None:
            await self._lane.close()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose(close_connection_pool=True)


_METRIC_OUTCOMES: dict[type, str] = {
    Succeeded: "succeeded",
    Failed: "failed",
    RetryIn: "retried",
    Released: "released",
    Aborted: "aborted",
}


async def _shielded(awaitable: Awaitable[bool]) -> bool:
    """Await a write to its end even if this task is cancelled meanwhile (the outcome must not be lost)."""
    future = asyncio.ensure_future(awaitable)
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()


async def _warn_if_evicting(redis: Any) -> None:
    """An evicted job is a lost job: say so when the server may evict keys (read from INFO memory, not CONFIG
    GET, which can read passwords and a least-privilege user should not have). No INFO: no warning."""
    try:
        policy = (await redis.info(section="memory")).get("maxmemory_policy")
    except Exception:
        return
    if policy and policy != "noeviction":
        log.warning(
            "redis_may_evict_jobs",
            maxmemory_policy=policy,
            fix="set maxmemory-policy noeviction on the Redis server that holds the queue",
        )


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (the event loop is a good part of a job's cost), unless asked for asyncio's
    own (``SCALR_QUEUE_EVENT_LOOP``); None means asyncio's default."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise WorkerSettingsError(
                "SCALR_QUEUE_EVENT_LOOP=uvloop needs uvloop: pip install uvloop"
            ) from None
        return None
    return uvloop.new_event_loop


__all__ = ["Worker", "loop_factory"]


def _unique_until_processing(attempt: Attempt) -> bool:
    plan = attempt.plan
    return plan is not None and plan.task.options.unique_until_processing and bool(unique_key_of(attempt))
