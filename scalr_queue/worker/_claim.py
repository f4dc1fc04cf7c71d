"""Claiming due jobs: one script call takes a batch, with each job's payload, try number and abort flag.

arq claims one id at a time (WATCH, EXISTS, ZSCORE, MULTI), then reads the payload and counts the try in another
transaction. Here the claim is still arq's in-progress key (set only if absent, as a lease holding the worker's
id) and the try is still arq's retry counter: the data model is arq's, the round trips are one per batch.
Everything the script returns is untrusted: an id that is not UTF-8, a score that is not a time, a payload or
counter of the wrong type come back marked, for the runner to fail the job with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .. import keys
from .._lane import Lane, packed, run_script
from .._lua import scripts

SCAN_LIMIT = 1000  # due ids looked at per claim: running jobs sit at the front of the queue
RETRY_KEY_TTL_S = 88_400  # arq's expiry on its try counter
_FIELDS = 6


@dataclass(slots=True)  # not frozen: one per job, and a frozen dataclass is slower to build
class Claimed:
    raw_id: bytes
    job_id: str
    score: float
    payload: bytes | None  # None: the job's data expired
    job_try: int  # arq's try counter after this claim
    aborted: bool
    dependency_failed: bool  # a job it depends on (``_depends_on``) failed for good
    corrupt: str | None  # why the job cannot be run at all, before decoding


@dataclass(frozen=True, slots=True)
class Batch:
    jobs: list[Claimed]
    upcoming_ms: float | None  # when the next job not yet due becomes due (None: nothing waits)
    paused: bool


class Claimer:
    """Claims batches of due jobs from one queue for one worker."""

    def __init__(
        self, redis: Redis, queue_key: str, lease_s: float, worker_id: str, lane: Lane | None = None
    ) -> None:
        self.redis = redis
        self.lane = lane
        self.queue_key = queue_key
        self._fixed: list[str | int] = [
            int(lease_s * 1000),
            worker_id,
            keys.IN_PROGRESS_PREFIX,
            keys.RETRY_PREFIX,
            keys.JOB_PREFIX,
            RETRY_KEY_TTL_S,
            keys.ABORT_KEY,
        ]
        self._keys = [
            self.queue_key,
            keys.paused_key(queue_key),
            keys.notify_key(queue_key),
            keys.ready_levels_key(queue_key),
            keys.DEPENDENCY_FAILED_KEY,
        ]
        self._index = keys.ready_prefix(queue_key)

    async def claim(self, count: int) -> Batch:
        """Up to ``count`` due jobs: by priority (0 first), oldest first within one."""
        flat: list[Any] = await run_script(
            self.lane, scripts(self.redis).claim, self._keys, self._args(count)
        )
        return self.batch(flat)

    def command(self, count: int) -> bytes:
        """The same claim packed to go out behind a BLPOP: it runs when that returns, so now is then (Redis's
        clock, or this worker's at sending if that is later). Its reply ends with that time (``ran_at``)."""
        args = self._args(count)
        args[0] = f"~{args[0]}"
        return packed("EVALSHA", scripts(self.redis).claim.sha, len(self._keys), *self._keys, *args)

    def batch(self, flat: list[Any]) -> Batch:
        """A claim's reply, read (a claim sent ahead: its time of running taken off first, ``ran_at``)."""
        head = flat[0]
        paused = head == b"paused"
        upcoming = None if paused or head is None else float(head)
        return Batch(_parse(flat), upcoming, paused)

    def _args(self, count: int) -> list[Any]:
        return [_now_ms(), count, SCAN_LIMIT, *self._fixed, self._index]

    async def claim_ids(self, ids: list[bytes | str]) -> list[Claimed]:
        """The named jobs, those queued and due (arq's ``start_jobs``)."""
        flat: list[Any] = await scripts(self.redis).claim_ids(
            keys=[self.queue_key, keys.DEPENDENCY_FAILED_KEY],
            args=[_now_ms(), len(ids), SCAN_LIMIT, *self._fixed, *ids],
        )
        return _parse(flat)


def _parse(flat: list[Any]) -> list[Claimed]:
    claimed = []
    for i in range(1, len(flat), _FIELDS):
        raw_id, score, payload, job_try, aborted, dependency_failed = flat[i : i + _FIELDS]
        corrupt = None
        try:
            job_id = raw_id.decode()
        except UnicodeDecodeError:
            job_id = raw_id.decode(errors="backslashreplace")
            corrupt = f"its id {raw_id!r} is not UTF-8 text"
        if payload == 0:
            corrupt = f"its record {keys.job_key(job_id)} is not a string"
            payload = None
        if job_try is None:
            corrupt = f"its try counter {keys.retry_key(job_id)} is not a number"
        claimed.append(
            Claimed(
                raw_id=raw_id,
                job_id=job_id,
                score=float(score),
                payload=payload,
                job_try=int(job_try or 1),
                aborted=bool(aborted),
                dependency_failed=bool(dependency_failed),
                corrupt=corrupt,
            )
        )
    return claimed


def _now_ms() -> int:
    return int(time.time() * 1000)


def ran_at(flat: list[Any]) -> float:
    """When a claim sent ahead ran (Redis's clock, ms), taken off the end of its reply."""
    return float(flat.pop())
