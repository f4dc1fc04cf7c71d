"""Finishing jobs in groups: every job that ends while a write is in flight rides on the next one.

Each finish is what arq's ``finish_job`` writes (result, cleanup of the job's keys, or a re-score for a retry),
plus the job's failure record and the try handed back after a shutdown. A group is one MULTI/EXEC: one round
trip for however many jobs ended meanwhile, each job's writes applied whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from redis.asyncio.client import Pipeline

from .. import keys
from ..failed import FailedJob, FailedStore


@dataclass
class Finish:
    job_id: str
    queue_key: str
    finish: bool
    result_data: bytes | None
    result_ttl_ms: int | None  # None: kept forever
    incr_score: int | None
    keep_in_progress_ms: int | None
    failure: FailedJob | None = None
    refund_try: bool = False

    async def write(self, pipe: Pipeline, store: FailedStore | None) -> None:
        """Queue this job's writes on ``pipe`` (arq's finish_job, plus our additions); nothing is sent yet."""
        if self.failure is not None and store is not None:
            await store.record(self.failure, pipe=pipe)
        in_progress = keys.in_progress_key(self.job_id)
        doomed = []
        if self.keep_in_progress_ms is None:
            doomed.append(in_progress)
        else:
            pipe.pexpire(in_progress, self.keep_in_progress_ms)
        if self.finish:
            if self.result_data:
                pipe.set(keys.result_key(self.job_id), self.result_data, px=self.result_ttl_ms)
            doomed += [keys.retry_key(self.job_id), keys.job_key(self.job_id)]
            pipe.zrem(abort_jobs_ss, self.job_id)
            pipe.zrem(self.queue_key, self.job_id)
        elif self.incr_score:
            pipe.zincrby(self.queue_key, self.incr_score, self.job_id)
        if self.refund_try:
            pipe.decr(keys.retry_key(self.job_id))
        pipe.delete(*doomed)


class FinishGroups:
    """Collects finishes and writes them in groups, one transaction per group."""

    def __init__(
        self,
        redis: Callable[[], ArqRedis],
        store: Callable[[], FailedStore | None],
        retry: Callable[[Callable[[], Awaitable[None]], str], Awaitable[None]],
    ) -> None:
        self.redis = redis
        self.store = store
        self.retry = retry
        self._waiting: list[tuple[Finish, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks

    async def finish(self, item: Finish) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_groups())
        await future

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self.retry(lambda group=group: self._write(group), group[0][0].job_id)  # type: ignore[misc]
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)

    async def _write(self, group: list[tuple[Finish, asyncio.Future[None]]]) -> None:
        store = self.store()
        async with self.redis().pipeline(transaction=True) as pipe:
            for item, _ in group:
                await item.write(pipe, store)
            await pipe.execute()


def result_ttl_ms(keep_forever: bool, keep_s: float | None) -> int | None:
    return None if keep_forever else int((keep_s or 0) * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)
