"""Where a client's jobs go: Redis, or (``SCALR_QUEUE_MODE=sync``) run inline at enqueue. Chosen once per client.

Both speak in the same records: a stored job becomes a ``ResultRecord`` when it finishes, so ``Job.status()``,
``Job.result()`` and ``Job.info()`` read the same way whichever backend ran it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from arq.connections import ArqRedis
from redis.asyncio import Redis

from . import keys
from ._lane import NOT_ANSWERED, Lane, lane_for, packed
from ._lua import scripts
from ._progress import Progress, read_progress
from ._store import (
    FreshEnqueue,
    PlainEnqueue,
    PlainEnqueueMany,
    PlainJob,
    enqueue_call,
    hold_job,
    open_batch,
    store_after,
    store_plain_jobs,
)
from .config import Settings
from .connection import create_redis, redis_call, redis_error
from .exceptions import ConfigError, JobNotFoundError, NotReplicatedError, UndecodableJobError
from .outcome import Failed, Released, RetryIn, Succeeded
from .records import JobRecord, JobStatus, ResultRecord, result_status
from .registry import PublishedRegistry
from .runner import Attempt, Runner, now_ms, plan_for
from .tasks import Task

BATCH = 1000  # jobs per round trip in enqueue_many
PLAIN_ENQUEUES_KEPT = 1000  # packed commands kept per kind, one per queue (and priority) enqueued to
INLINE_KEPT = 10_000  # sync mode keeps the outcomes of this many recent jobs


@dataclass(slots=True)
class Prepared:
    """A job checked and encoded, ready to be stored (never changed after: not frozen, which costs a microsecond
    on each enqueue)."""

    name: str
    known: Task[..., Any] | None
    queue: str
    job_id: str
    record: JobRecord
    payload: bytes
    score: float
    now_ms: int
    expires_ms: int
    unique_key: str | None = None
    unique_ttl_ms: int = 0
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    # queued with no option and no uniqueness: its id made here, due now, priority 0 (``_store.FreshEnqueue``)
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A batch checked and encoded: its jobs (their records name the batch) and its held callbacks."""

    batch_id: str
    jobs: Sequence[Prepared]
    then: Prepared | None
    catch: Prepared | None
    now_ms: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class BatchState:
    """A batch as Redis holds it (read from Redis: decoded leniently): its hash, and its three sets of ids."""

    fields: dict[str, str]
    pending: set[str]
    succeeded: set[str]
    failed: set[str]


# What storing a job did: True stored; False not stored, its ``_job_id`` exists; a str, not stored, that unique
# job (its id) waits already.
Stored = bool | str


K = TypeVar("K")
V = TypeVar("V")


def _kept(cache: dict[K, V], key: K, make: Callable[[], V]) -> V:
    """``make()``, kept in ``cache`` under ``key``; the cache starts over once it holds ``PLAIN_ENQUEUES_KEPT``
    (the names come from callers: bounded, whatever they send)."""
    if len(cache) >= PLAIN_ENQUEUES_KEPT:
        cache.clear()
    made = cache[key] = make()
    return made


def _stored(reply: Any) -> Stored:
    if isinstance(reply, list):  # ENQUEUE_AFTER: {'unknown', dependency id}
        missing = reply[1].decode(errors="backslashreplace") if isinstance(reply[1], bytes) else str(reply[1])
        raise JobNotFoundError(
            f"_depends_on names job {missing!r}: it is not queued, running, waiting or finished with a kept "
            "result or failure record"
        )
    if isinstance(reply, bytes):
        return reply.decode(errors="backslashreplace")
    return bool(reply)


class Backend(Protocol):
    async def store(self, job: Prepared) -> Stored: ...
    async def store_many(self, jobs: Sequence[Prepared]) -> list[Stored]: ...
    async def store_batch(self, plan: BatchPlan) -> list[Stored]: ...
    async def batch_state(self, batch_id: str) -> BatchState | None: ...
    async def status(self, job_id: str, queue: str) -> JobStatus: ...
    async def abort(self, job_id: str, queue: str) -> str: ...
    async def record(self, job_id: str) -> tuple[ResultRecord | None, JobRecord | None, bool]: ...
    async def progress(self, job_id: str) -> Progress | None: ...
    async def close(self) -> None: ...


class RedisBackend:
    """Jobs go to Redis through the enqueue script; reads go to arq's keys."""

    def __init__(self, settings: Settings, redis: ArqRedis | None = None) -> None:
        self.settings = settings
        self._redis = redis
        self.published = PublishedRegistry()
        self._lane: Lane | None = None
        self._plain_enqueues: dict[tuple[str, int], PlainEnqueue] = {}  # by (queue, priority)
        self._plain_enqueue_manys: dict[str, PlainEnqueueMany] = {}  # by queue
        self._fresh_enqueues: dict[str, FreshEnqueue] = {}  # by queue

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            # No per-read socket timeout: every call is bounded as a whole by redis_call (one timer, not three).
            self._redis = create_redis(self.settings, socket_timeout=0)
        return self._redis

    @property
    def lane(self) -> Lane | None:
        """The single enqueue's fast path (``_lane``)."""
        if self._lane is None:
            self._lane = lane_for(self.redis)
        return self._lane

    async def close(self) -> None:
        if self._lane is not None:
            lane, self._lane = self._lane, None
            await lane.close()
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose(close_connection_pool=True)

    async def store(self, job: Prepared) -> Stored:
        if self.settings.wait_replicas:
            return (await self.store_many([job]))[0]
        if job.depends_on:
            async with redis_call(self.settings, job_id=job.job_id):
                return _stored(await _store(self.redis, job))
        deadline = asyncio.get_running_loop().time() + self.settings.redis_timeout
        lane = self.lane
        if lane is not None:
            command, replies = self._enqueue_command(job)
            reply = await self._on_lane(lane, command, deadline, job.job_id, replies)
            if reply is not NOT_ANSWERED:
                return True if job.fresh else _stored(reply)  # a fresh job's EXEC answered: it is stored
        async with redis_call(self.settings, job_id=job.job_id, until=deadline):
            job_keys, args = _enqueue_call(job)
            return _stored(await scripts(self.redis).enqueue(keys=job_keys, args=args))

    def _enqueue_command(self, job: Prepared) -> tuple[bytes, int]:
        """The lane's command for ``job``, packed, and how many replies it gets: a fresh job's transaction, else
        ENQUEUE's call (a plain job's from its queue and priority's template)."""
        if job.fresh:
            fresh = self._fresh_enqueues.get(job.queue) or _kept(
                self._fresh_enqueues, job.queue, lambda: FreshEnqueue(job.queue)
            )
            return fresh.command(job.job_id, job.payload, job.score, job.expires_ms), FreshEnqueue.REPLIES
        return self._script_command(job), 1

    def _script_command(self, job: Prepared) -> bytes:
        sha = scripts(self.redis).enqueue.sha
        if job.unique_key is not None:
            job_keys, args = _enqueue_call(job)
            return packed("EVALSHA", sha, len(job_keys), *job_keys, *args)
        template = self._plain_enqueues.get((job.queue, job.priority)) or _kept(
            self._plain_enqueues,
            (job.queue, job.priority),
            lambda: PlainEnqueue(sha, job.queue, job.priority),
        )
        return template.command(job.job_id, job.payload, job.score, job.now_ms, job.expires_ms)

    async def store_many(self, jobs: Sequence[Prepared]) -> list[Stored]:
        """One call per ``BATCH`` jobs: plain jobs of one queue as one packed ENQUEUE_MANY on the lane, else one
        pipeline; with ``SCALR_QUEUE_WAIT_REPLICAS``, a WAIT on the pipeline's own connection (WAIT counts that
        connection's writes) and NotReplicatedError if too few replicas confirm."""
        created: list[Stored] = []
        for start in range(0, len(jobs), BATCH):
            chunk = jobs[start : start + BATCH]
            outcomes = None if self.settings.wait_replicas else await self._store_plain_on_lane(chunk)
            if outcomes is None:
                outcomes = await self._store_chunk(chunk)
            created += [_stored(done) for done in outcomes]
        return created

    async def _store_plain_on_lane(self, chunk: Sequence[Prepared]) -> list[Any] | None:
        """ENQUEUE_MANY's replies for a chunk of plain jobs of one queue, through the lane; None for any other
        chunk, or when the lane does not answer (the pipeline then stores it)."""
        queue = chunk[0].queue
        if any(job.unique_key is not None or job.depends_on or job.queue != queue for job in chunk):
            return None
        lane = self.lane
        if lane is None:
            return None
        now = max(job.now_ms for job in chunk)
        command = self._plain_enqueue_many(queue).command(now, [_plain(job) for job in chunk])
        deadline = asyncio.get_running_loop().time() + self.settings.redis_timeout
        reply = await self._on_lane(lane, command, deadline, chunk[0].job_id)
        return None if reply is NOT_ANSWERED else list(reply)

    def _plain_enqueue_many(self, queue: str) -> PlainEnqueueMany:
        return self._plain_enqueue_manys.get(queue) or _kept(
            self._plain_enqueue_manys,
            queue,
            lambda: PlainEnqueueMany(scripts(self.redis).enqueue_many.sha, queue),
        )

    async def _on_lane(
        self, lane: Lane, command: bytes, deadline: float, job_id: str, replies: int = 1
    ) -> Any:
        """The lane's answer to ``command`` (bounded by its watchdog), a Redis failure raised as ours."""
        try:
            return await lane.call(command, deadline, replies)
        except Exception as error:
            ours = redis_error(self.settings, error, job_id)
            if ours is None:
                raise
            raise ours from None

    async def _store_chunk(self, chunk: Sequence[Prepared]) -> list[Any]:
        """The chunk's replies through one pipeline: the plain jobs one call per queue, the others one call each."""
        wait = self.settings.wait_replicas
        plain: dict[str, list[int]] = {}  # queue -> positions in chunk of its plain jobs: one call per queue
        calls: list[tuple[bool, list[int]]] = []  # (one reply per position?, positions), per call in order
        async with (
            redis_call(self.settings, job_id=chunk[0].job_id),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for position, job in enumerate(chunk):
                if job.unique_key is None and not job.depends_on:
                    plain.setdefault(job.queue, []).append(position)
                    continue
                await _queue_plain(self.redis, pipe, chunk, plain, calls)
                await _store(self.redis, job, pipe)
                calls.append((False, [position]))
            await _queue_plain(self.redis, pipe, chunk, plain, calls)
            if wait:
                pipe.execute_command("WAIT", wait, int(self.settings.wait_timeout * 1000))
            results = await pipe.execute()
        outcomes: list[Any] = [None] * len(chunk)
        for (per_position, positions), reply in zip(calls, results, strict=False):  # WAIT's reply last
            if per_position:
                for position, done in zip(positions, reply, strict=True):
                    outcomes[position] = done
            else:
                outcomes[positions[0]] = reply
        if wait:
            acknowledged = int(results[-1])
            stored = [job.job_id for job, done in zip(chunk, outcomes, strict=True) if done == 1]
            if stored and acknowledged < wait:
                raise NotReplicatedError(stored, wait, acknowledged, self.settings.wait_timeout)
        return outcomes

    async def store_batch(self, plan: BatchPlan) -> list[Stored]:
        """The batch's state and held callbacks, then its jobs, one pipeline per ``BATCH`` jobs: the state goes
        first, in the first pipeline (sent in order on one connection), so no job can end before it is there."""
        created: list[Stored] = []
        wait = self.settings.wait_replicas
        jobs = plan.jobs
        for start in range(0, max(len(jobs), 1), BATCH):
            chunk = jobs[start : start + BATCH]
            async with (
                redis_call(self.settings, job_id=plan.batch_id),
                self.redis.pipeline(transaction=False) as pipe,
            ):
                head = 0
                if start == 0:
                    open_batch(
                        pipe,
                        batch_id=plan.batch_id,
                        job_ids=[job.job_id for job in jobs],
                        then_id=plan.then.job_id if plan.then else None,
                        catch_id=plan.catch.job_id if plan.catch else None,
                        now_ms=plan.now_ms,
                        ttl_ms=plan.ttl_ms,
                        chunk=BATCH,
                    )
                    for callback in (plan.then, plan.catch):
                        if callback is not None:
                            hold_job(
                                pipe,
                                job_id=callback.job_id,
                                queue=callback.queue,
                                payload=callback.payload,
                                ttl_ms=plan.ttl_ms,
                                priority=callback.priority,
                            )
                    head = len(pipe.command_stack)
                for job in chunk:
                    await _store(self.redis, job, pipe)
                if wait:
                    pipe.execute_command("WAIT", wait, int(self.settings.wait_timeout * 1000))
                results = (await pipe.execute())[head:]
            if wait:
                acknowledged = int(results.pop())
                if acknowledged < wait:
                    stored = [job.job_id for job, done in zip(chunk, results, strict=True) if done == 1]
                    raise NotReplicatedError(
                        stored or [plan.batch_id], wait, acknowledged, self.settings.wait_timeout
                    )
            created += [_stored(done) for done in results]
        return created

    async def batch_state(self, batch_id: str) -> BatchState | None:
        """The batch's hash and sets, None if Redis holds no state for it. The pending set is read first: a job
        that ends between the reads shows in both, and counts as ended."""
        async with redis_call(self.settings), self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.batch_pending_key(batch_id))
            pipe.smembers(keys.batch_succeeded_key(batch_id))
            pipe.smembers(keys.batch_failed_key(batch_id))
            pipe.hgetall(keys.batch_key(batch_id))
            pending, succeeded, failed, fields = await pipe.execute(raise_on_error=False)
        if not isinstance(fields, dict) or not fields:
            return None

        def ids(members: Any) -> set[str]:
            if not isinstance(members, set):
                return set()
            return {m.decode(errors="backslashreplace") for m in members if isinstance(m, bytes)}

        done_ok, done_failed = ids(succeeded), ids(failed)
        return BatchState(
            fields={
                k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace")
                for k, v in fields.items()
                if isinstance(k, bytes) and isinstance(v, bytes)
            },
            pending=ids(pending) - done_ok - done_failed,
            succeeded=done_ok,
            failed=done_failed - done_ok,
        )

    async def status(self, job_id: str, queue: str) -> JobStatus:
        async with redis_call(self.settings):
            result, in_progress, score, aborted, reason, waiting = await scripts(self.redis).status(
                keys=[
                    keys.result_key(job_id),
                    keys.in_progress_key(job_id),
                    keys.queue_key(queue),
                    keys.ABORT_KEY,
                    keys.failed_key(job_id),
                    keys.waiting_key(job_id),
                ],
                args=[job_id],
            )
        if result is not None:
            try:
                return result_status(ResultRecord.decode(result, job_id))
            except UndecodableJobError:
                return JobStatus.failed
        if aborted is not None and (in_progress or score is not None):
            return JobStatus.aborted  # ending: its worker cancels it, or ends it without starting it
        if in_progress:
            return JobStatus.in_progress
        if score is not None:
            return JobStatus.deferred if float(score) > time.time() * 1000 else JobStatus.queued
        if waiting:
            return JobStatus.waiting
        if reason == b"aborted":  # no result kept (keep_result=0): its failure record says it
            return JobStatus.aborted
        return JobStatus.not_found

    async def abort(self, job_id: str, queue: str) -> str:
        """Abort one job (``ABORT`` in _lua.py): 'running', 'queued', 'finished' or 'not_found'. A job not in
        ``queue`` is looked for in the other known queues (a handle rebuilt from an id knows no queue)."""
        async with redis_call(self.settings):
            found = await find_queue(self.redis, job_id, queue)
            reply = await scripts(self.redis).abort(
                keys=[
                    keys.result_key(job_id),
                    keys.in_progress_key(job_id),
                    keys.queue_key(found),
                    keys.ABORT_KEY,
                    keys.notify_key(found),
                    keys.failed_key(job_id),
                    keys.waiting_key(job_id),
                ],
                args=[job_id, now_ms(), keys.NOTIFY_CAP, keys.ready_prefix(found)],
            )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

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

    async def progress(self, job_id: str) -> Progress | None:
        async with redis_call(self.settings):
            return await read_progress(self.redis, job_id)


async def find_queue(redis: Redis, job_id: str, queue: str) -> str:
    """The queue that holds ``job_id``: ``queue`` if it does (or if no known queue does), else the first known
    queue that does."""
    if await redis.zscore(keys.queue_key(queue), job_id) is not None:
        return queue
    members: set[bytes] = await redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
    names = sorted(m.decode(errors="backslashreplace") for m in members)
    if names:
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zscore(keys.queue_key(name), job_id)
            scores = await pipe.execute(raise_on_error=False)
        for name, score in zip(names, scores, strict=True):
            if isinstance(score, float):
                return name
    return queue


async def _queue_plain(
    redis: ArqRedis,
    pipe: Any,
    chunk: Sequence[Prepared],
    plain: dict[str, list[int]],
    calls: list[tuple[bool, list[int]]],
) -> None:
    """The plain jobs seen so far, one call per queue, queued on ``pipe`` before any job that may depend on them."""
    for queue, positions in plain.items():
        await store_plain_jobs(
            redis,
            queue=queue,
            now_ms=max(chunk[p].now_ms for p in positions),
            jobs=[_plain(chunk[p]) for p in positions],
            pipe=pipe,
        )
        calls.append((True, positions))
    plain.clear()


def _plain(job: Prepared) -> PlainJob:
    return (job.job_id, job.payload, job.score, job.expires_ms, job.priority)


def _store(redis: ArqRedis, job: Prepared, pipe: Any = None) -> Any:
    if job.depends_on:
        return store_after(
            redis,
            job_id=job.job_id,
            queue=job.queue,
            payload=job.payload,
            score_ms=job.score,
            now_ms=job.now_ms,
            expires_ms=job.expires_ms,
            priority=job.priority,
            depends_on=job.depends_on,
            pipe=pipe,
        )
    job_keys, args = _enqueue_call(job)
    return scripts(redis).enqueue(keys=job_keys, args=args, client=pipe)


def _enqueue_call(job: Prepared) -> tuple[list[str], list[Any]]:
    """ENQUEUE's keys and arguments for a plain or unique job: sent by the lane, or queued on a pipeline."""
    return enqueue_call(
        job_id=job.job_id,
        queue=job.queue,
        payload=job.payload,
        score_ms=job.score,
        now_ms=job.now_ms,
        expires_ms=job.expires_ms,
        unique_key=job.unique_key,
        unique_ttl_ms=job.unique_ttl_ms,
        priority=job.priority,
    )


class InlineBackend:
    """``SCALR_QUEUE_MODE=sync``: the job runs at enqueue, through the same runner and JSON round trip, with
    its tries (without the waits); the outcome is kept in this process for its handle to read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outcomes: OrderedDict[str, ResultRecord] = OrderedDict()

    async def close(self) -> None:
        return None

    async def store(self, job: Prepared) -> Stored:
        if job.depends_on:
            raise ConfigError(
                "SCALR_QUEUE_MODE=sync runs each job at enqueue: _depends_on needs a Redis queue"
            )
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

    async def store_many(self, jobs: Sequence[Prepared]) -> list[Stored]:
        return [await self.store(job) for job in jobs]

    async def store_batch(self, plan: BatchPlan) -> list[Stored]:
        raise ConfigError("SCALR_QUEUE_MODE=sync runs each job at enqueue: batch() needs a Redis queue")

    async def batch_state(self, batch_id: str) -> BatchState | None:
        return None

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
        return result_status(outcome)

    async def abort(self, job_id: str, queue: str) -> str:
        """Sync mode ran the job at enqueue: it is finished, or unknown."""
        return "finished" if job_id in self.outcomes else "not_found"

    async def record(self, job_id: str) -> tuple[ResultRecord | None, JobRecord | None, bool]:
        outcome = self.outcomes.get(job_id)
        return outcome, None, outcome is not None

    async def progress(self, job_id: str) -> Progress | None:
        return None  # an inline job has finished by the time anyone can ask


def backend_for(settings: Settings, redis: ArqRedis | None = None) -> RedisBackend | InlineBackend:
    """The backend the settings ask for: chosen once, when the client is made."""
    return InlineBackend(settings) if settings.mode == "sync" else RedisBackend(settings, redis)
