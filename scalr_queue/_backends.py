"""Where a client's jobs go: Redis, or (``SCALR_QUEUE_MODE=sync``) run inline at enqueue. Chosen once per client.

Both speak in the same records: a stored job becomes a ``ResultRecord`` when it finishes, so ``Job.status()``,
``Job.result()`` and ``Job.info()`` read the same way whichever backend ran it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from arq.connections import ArqRedis

from . import keys
from ._lua import scripts
from ._store import store_job
from .config import Settings
from .connection import create_redis, redis_call
from .exceptions import ConfigError, NotReplicatedError, UndecodableJobError
from .outcome import Failed, Released, RetryIn, Succeeded
from .records import JobRecord, JobStatus, ResultRecord
from .registry import PublishedRegistry
from .runner import Attempt, Runner, now_ms, plan_for
from .tasks import Task

BATCH = 1000  # jobs per round trip in enqueue_many
INLINE_KEPT = 10_000  # sync mode keeps the outcomes of this many recent jobs


@dataclass(frozen=True, slots=True)
class Prepared:
    """A job checked and encoded, ready to be stored."""

    name: str
    known: Task[..., Any] | None
    queue: str
    job_id: str
    record: JobRecord
    payload: bytes
    score: float
    now_ms: int
    expires_ms: int


class Backend(Protocol):
    async def store(self, job: Prepared) -> bool: ...
    async def store_many(self, jobs: Sequence[Prepared]) -> list[bool]: ...
    async def status(self, job_id: str, queue: str) -> JobStatus: ...
    async def record(self, job_id: str) -> tuple[ResultRecord | None, JobRecord | None, bool]: ...
    async def close(self) -> None: ...


class RedisBackend:
    """Jobs go to Redis through the enqueue script; reads go to arq's keys."""

    def __init__(self, settings: Settings, redis: ArqRedis | None = None) -> None:
        self.settings = settings
        self._redis = redis
        self.published = PublishedRegistry()

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            # No per-read socket timeout: every call is bounded as a whole by redis_call (one timer, not three).
            self._redis = create_redis(self.settings, socket_timeout=0)
        return self._redis

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose(close_connection_pool=True)

    async def store(self, job: Prepared) -> bool:
        if self.settings.wait_replicas:
            return (await self.store_many([job]))[0]
        async with redis_call(self.settings, job_id=job.job_id):
            return bool(await _store(self.redis, job))

    async def store_many(self, jobs: Sequence[Prepared]) -> list[bool]:
        """One pipeline per ``BATCH`` jobs; with ``SCALR_QUEUE_WAIT_REPLICAS``, a WAIT on the pipeline's own
        connection (WAIT counts that connection's writes) and NotReplicatedError if too few replicas confirm."""
        created: list[bool] = []
        wait = self.settings.wait_replicas
        for start in range(0, len(jobs), BATCH):
            chunk = jobs[start : start + BATCH]
            async with (
                redis_call(self.settings, job_id=chunk[0].job_id),
                self.redis.pipeline(transaction=False) as pipe,
            ):
                for job in chunk:
                    await _store(self.redis, job, pipe)  # queued on the pipeline: sent with execute()
                if wait:
                    pipe.execute_command("WAIT", wait, int(self.settings.wait_timeout * 1000))
                results = await pipe.execute()
            if wait:
                acknowledged = int(results.pop())
                stored = [job.job_id for job, done in zip(chunk, results, strict=True) if done]
                if stored and acknowledged < wait:
                    raise NotReplicatedError(stored, wait, acknowledged, self.settings.wait_timeout)
            created += [bool(done) for done in results]
        return created

    async def status(self, job_id: str, queue: str) -> JobStatus:
        async with redis_call(self.settings):
            result, in_progress, score = await scripts(self.redis).status(
                keys=[keys.result_key(job_id), keys.in_progress_key(job_id), keys.queue_key(queue)],
                args=[job_id],
            )
        if result is not None:
            try:
                return JobStatus.complete if ResultRecord.decode(result, job_id).success else JobStatus.failed
            except UndecodableJobError:
                return JobStatus.failed
        if in_progress:
            return JobStatus.in_progress
        if score is not None:
            return JobStatus.deferred if float(score) > time.time() * 1000 else JobStatus.queued
        return JobStatus.not_found

    async def record(self, job_id: str) -> tuple[ResultRecord | None, JobRecord | None, bool]:
        """The result if finished, the job record if still queued, and whether the job exists at all.

        Plain pipelining (a MULTI is refused by a full Redis), the job read before the result: a job that finishes
        between the two reads shows its result, never "not found"."""
        async with redis_call(self.settings), self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.job_key(job_id))
            pipe.get(keys.result_key(job_id))
            job, result = await pipe.execute()
        if result is not None:
            return ResultRecord.decode(result, job_id), None, True
        if job is not None:
            try:
                return None, JobRecord.decode(job), True
            except UndecodableJobError:
                return None, None, True
        return None, None, False


def _store(redis: ArqRedis, job: Prepared, pipe: Any = None) -> Any:
    return store_job(
        redis,
        job_id=job.job_id,
        queue=job.queue,
        payload=job.payload,
        score_ms=job.score,
        now_ms=job.now_ms,
        expires_ms=job.expires_ms,
        pipe=pipe,
    )


class InlineBackend:
    """``SCALR_QUEUE_MODE=sync``: the job runs at enqueue, through the same runner and JSON round trip, with
    its tries (without the waits); the outcome is kept in this process for its handle to read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outcomes: OrderedDict[str, ResultRecord] = OrderedDict()

    async def close(self) -> None:
        return None

    async def store(self, job: Prepared) -> bool:
        if job.known is None:
            raise ConfigError(
                f"SCALR_QUEUE_MODE=sync cannot run task {job.name!r}: set SCALR_QUEUE_TASKS to the module that "
                "exports tasks = [...], or pass the function instead of its name"
            )
        if job.job_id in self.outcomes:
            return False
        self.outcomes[job.job_id] = await self._run(job, job.known)
        while len(self.outcomes) > INLINE_KEPT:
            self.outcomes.popitem(last=False)
        return True

    async def store_many(self, jobs: Sequence[Prepared]) -> list[bool]:
        return [await self.store(job) for job in jobs]

    async def _run(self, job: Prepared, task: Task[..., Any]) -> ResultRecord:
        settings = self.settings
        plan = plan_for(
            task,
            timeout_s=settings.job_timeout,
            max_tries=settings.max_tries,
            keep_result_s=settings.keep_result,
            keep_result_forever=False,
            backoff=settings.default_backoff,
        )
        runner = Runner({task.name: plan}, queue=job.queue, rollout_window_s=0.0, arq_lines=False)
        record = JobRecord.decode(job.payload)  # the task sees what a worker would: JSON data, rebuilt
        job_try = 1
        started = now_ms()
        while True:  # the same tries as on a worker, without the backoff waits
            attempt = Attempt(job.job_id, job.job_id.encode(), job.score, job_try, job.payload, now_ms())
            attempt.record, attempt.plan = record, plan
            outcome = await runner.run(attempt, {"redis": None, "queue": job.queue})
            if isinstance(outcome, RetryIn | Released) and job_try < plan.max_tries:
                job_try += 1
                await asyncio.sleep(0)
                continue
            break
        success = isinstance(outcome, Succeeded)
        result: Any = outcome.result if isinstance(outcome, Succeeded) else None
        if isinstance(outcome, Failed):
            result = outcome.error
        elif not success:
            result = RuntimeError(f"job ended as {type(outcome).__name__}")
        return ResultRecord.decode(
            ResultRecord(
                job_id=job.job_id,
                task=job.name,
                success=success,
                result=result,
                job_try=job_try,
                enqueue_ms=record.enqueue_ms,
                start_ms=started,
                finish_ms=now_ms(),
                queue=job.queue,
                kwargs=record.kwargs,
            ).encode(),
            job.job_id,
        )

    async def status(self, job_id: str, queue: str) -> JobStatus:
        outcome = self.outcomes.get(job_id)
        if outcome is None:
            return JobStatus.not_found
        return JobStatus.complete if outcome.success else JobStatus.failed

    async def record(self, job_id: str) -> tuple[ResultRecord | None, JobRecord | None, bool]:
        outcome = self.outcomes.get(job_id)
        return outcome, None, outcome is not None


def backend_for(settings: Settings, redis: ArqRedis | None = None) -> RedisBackend | InlineBackend:
    """The backend the settings ask for: chosen once, when the client is made."""
    return InlineBackend(settings) if settings.mode == "sync" else RedisBackend(settings, redis)
