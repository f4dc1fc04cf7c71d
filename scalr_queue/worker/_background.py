"""What a worker does beside running jobs: renew leases, listen for wake-up tokens, watch its event loop.

Each is a loop that checks the stop state every turn, so ending them never depends on one cancellation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from .. import keys
from .._lane import packed
from .._lua import scripts
from ..connection import describe_error, transient
from ..logs import get_logger
from ..runner import Attempt
from ._claim import Batch, Claimer, ran_at
from ._stop import StopState

log = get_logger("scalr_queue.worker")

NUDGE_TTL_MS = 60_000  # a worker's own wake-up list outlives no worker by long
LAG_TICK_S = 0.25  # how often the loop watcher wakes
LAG_WARN_S = 1.0  # a turn of the event loop this late is logged: something blocked it


async def _pause(stop: StopState, seconds: float) -> None:
    """Sleep ``seconds``, or less if the worker starts stopping."""
    if stop.requested:
        return
    try:
        async with asyncio.timeout(seconds):
            await stop.event.wait()
    except TimeoutError:
        pass


class LeaseKeeper:
    """Renews the leases of running jobs every third of the lease.

    After an outage longer than the lease it takes back the leases that ran out (nobody else took the job), and a
    lease another worker holds now is logged and never renewed again: that worker runs the job now, and this
    worker's outcome for it will be dropped.
    """

    def __init__(
        self, redis: Redis, worker_id: str, lease_s: float, running: Callable[[], Mapping[bytes, Attempt]]
    ) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.running = running
        self.lost: set[bytes] = set()

    async def run(self, stop: StopState) -> None:
        lease_ms = int(self.lease_s * 1000)
        failing = False
        while not (
            stop.requested and not self.running()
        ):  # leases outlive the stop request: the grace is long
            await asyncio.sleep(self.lease_s / 3)
            held = [(raw, a.counter) for raw, a in self.running().items() if raw not in self.lost]
            if not held:
                continue
            try:
                retaken, lost = await scripts(self.redis).renew(
                    args=[
                        self.worker_id,
                        lease_ms,
                        keys.IN_PROGRESS_PREFIX,
                        keys.RETRY_PREFIX,
                        keys.JOB_PREFIX,
                        *(part for pair in held for part in pair),
                    ]
                )
            except Exception as exc:  # never let the renewals stop: the jobs would run twice
                if not failing:
                    log.warning("lease_renewal_failed", jobs=len(held), error=describe_error(exc))
                failing = True
                continue
            failing = False
            for raw in retaken:
                log.warning("lease_retaken", job_id=_text(raw), reason="it ran out during a Redis outage")
            running = self.running()
            for raw in lost:
                attempt = running.get(raw)
                if attempt is None or attempt.outcome is not None:
                    continue  # it ended (its outcome written) while this renewal was on its way: nothing was lost
                self.lost.add(raw)
                holder = await self._holder(raw)
                log.error(
                    "lease_lost",
                    job_id=_text(raw),
                    held_by=holder,
                    action="another worker runs this job now; this worker's outcome will be dropped",
                )

    async def _holder(self, raw: bytes) -> str | None:
        try:
            holder = await self.redis.get(keys.IN_PROGRESS_PREFIX.encode() + raw)
        except Exception:
            return None
        return _text(holder) if holder else None


class WakeListener:
    """Blocks on the queue's notify list while the worker is idle, with the worker's next claim sent behind it.

    Redis runs a blocked client's next command the moment the block ends, so the CLAIM that goes out with the
    BLPOP takes the due jobs at once: a job queued to an idle worker reaches it in one round trip, not two (a
    wake-up token, then a claim). While that claim is out (``reserved``: the slots it may fill) the main loop
    claims nothing itself: when it wants to (a deferred job fell due, Redis came back) it ``nudge``s, a token on the
    worker's own list, the second key of the BLPOP, and the claim runs at once. The jobs the claim took are handed
    to ``start`` at once. The main loop is woken only when there may be more to claim (the claim took all it asked
    for) or a token brought nothing (a deferred job that is now the next one due, or another worker was faster).

    The blocking call runs in this task, never in the worker's main loop: waking on a timer or a stop request
    never needs a Redis call to be cancelled. Before a stop cancels it, the worker nudges it and waits (a second at
    most) for the claim's reply, whose jobs are put back: none is left leased to a worker that has gone.
    Without a connection of its own (Sentinel: its pool checks the primary at each checkout) it sends the BLPOP
    alone, and the woken main loop claims.
    """

    def __init__(
        self,
        redis: Redis,
        queue_key: str,
        wait_s: float,
        outage: Outage,
        claimer: Claimer,
        free_slots: Callable[[], int],
        start: Callable[[Batch, float], None],
        worker_id: str,
    ) -> None:
        self.redis = redis
        self.key = keys.notify_key(queue_key)
        self.wait_s = wait_s
        self.idle = asyncio.Event()
        self.outage = outage
        self.reserved = 0
        self._claim_done = asyncio.Event()  # set while no claim of the listener's is out
        self._claim_done.set()
        self._claimer = claimer
        self._free_slots = free_slots
        self._start = start
        self._own_key = keys.worker_wake_key(worker_id)
        self._notify = self.key.encode()
        self._blpop = packed("BLPOP", self.key, self._own_key, f"{wait_s:.3f}")
        self._pipelined = True
        pool = redis.connection_pool
        self._connection: AbstractConnection | None = (
            None if isinstance(pool, SentinelConnectionPool) else pool.make_connection()  # type: ignore[no-untyped-call]
        )

    async def run(self, stop: StopState, wake: Callable[[], None]) -> None:
        backoff = 0.1
        try:
            while not stop.requested:
                if not self.idle.is_set():
                    waiter = asyncio.ensure_future(self.idle.wait())
                    stopper = asyncio.ensure_future(stop.event.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stopper.cancel()
                    continue
                try:
                    wake_worker = await self._listen()
                except Exception as exc:  # never let the listener die: it would wake on timers only
                    self.outage.failed(exc)
                    await _pause(stop, backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                self.outage.answered()
                # The jobs just started run their first step before the next BLPOP goes out.
                await asyncio.sleep(0)
                if wake_worker:
                    # Not idle until the worker's claim says so (it sets idle again): the next BLPOP waits for
                    # the main loop's turn, instead of going out first and delaying it.
                    self.idle.clear()
                    wake()
        finally:
            if self._connection is not None:
                await self._connection.disconnect(nowait=True)

    async def nudge(self) -> None:
        """End the BLPOP now, so that the claim behind it runs (the main loop wanted to claim)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._own_key, 1)
            pipe.pexpire(self._own_key, NUDGE_TTL_MS)
            await pipe.execute()

    async def claim_read(self) -> None:
        """Until no claim of the listener's is out (its reply read and handed on)."""
        await self._claim_done.wait()

    async def _listen(self) -> bool:
        """One BLPOP, with a claim behind it when there is a free slot; whether the main loop should look."""
        connection = self._connection
        count = self._free_slots() if connection is not None and self._pipelined else 0
        if connection is None or count <= 0:
            # BLPOP takes fractional seconds (Redis >= 6); redis-py's hint says int.
            return bool(await self.redis.execute_command("BLPOP", self.key, f"{self.wait_s:.3f}"))  # type: ignore[no-untyped-call]
        self.reserved = count
        self._claim_done.clear()
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_packed_command(
                self._blpop + self._claimer.command(count), check_health=False
            )
            token = await connection.read_response()
            try:
                flat = await connection.read_response()
            except NoScriptError:  # Redis lost its scripts (a restart): load it; the woken main loop claims
                await self.redis.script_load(scripts(self.redis).claim.script)
                return True
            except ResponseError as exc:  # refused (an ACL without TIME): the main loop claims from now on
                self._pipelined = False
                log.warning(
                    "claim_ahead_off",
                    error=describe_error(exc),
                    fix="give the worker's Redis user +time (docs/security.md); until then it claims after each "
                    "wake-up, one round trip later",
                )
                return True
            ran_at_ms = ran_at(flat)
            batch = self._claimer.batch(flat)
            self.reserved = 0
            self._start(batch, max(time.time() - ran_at_ms / 1000, 0.0))
        except BaseException:
            await connection.disconnect(nowait=True)  # never reused with a reply unread
            raise
        finally:
            self.reserved = 0
            self._claim_done.set()
        queued = token is not None and token[0] == self._notify  # not a nudge of our own
        return len(batch.jobs) >= count or (queued and not batch.jobs)


class LagMonitor:
    """Notices when something blocks the event loop (a task calling blocking code) and says which jobs ran."""

    def __init__(self, running: Callable[[], Mapping[bytes, Attempt]]) -> None:
        self.running = running
        self.worst_s = 0.0

    async def run(self, stop: StopState) -> None:
        while not stop.requested:
            before = time.monotonic()
            await _pause(stop, LAG_TICK_S)
            lag = time.monotonic() - before - LAG_TICK_S
            if lag >= LAG_WARN_S and not stop.requested:
                self.worst_s = max(self.worst_s, lag)
                running = [f"{a.task_name}({a.job_id})" for a in self.running().values()]
                log.warning(
                    "event_loop_blocked",
                    blocked_s=round(lag, 2),
                    running=running,
                    fix="a task called blocking code; run it with await asyncio.to_thread(...) (docs: lifecycle)",
                )


class Outage:
    """Whether Redis is answering, as every part of the worker sees it: logged once when it stops, once when
    it is back."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.since is not None:
            return
        self.since = time.monotonic()
        if not transient(exc):
            log.error(
                "redis_refused",
                error=describe_error(exc),
                action="retrying with backoff",
                fix="a key of the wrong type, or a command the Redis user may not run (docs: security, redis-keys)",
            )
        elif isinstance(exc, OutOfMemoryError):
            log.error(
                "redis_full",
                error=describe_error(exc),
                action="finishing running jobs (that frees memory) and retrying",
                fix="raise maxmemory, or find what fills Redis (big payloads, kept results, failed records)",
            )
        else:
            log.warning("redis_unavailable", error=describe_error(exc), action="waiting for it")

    def answered(self) -> None:
        if self.since is not None:
            log.info("redis_reconnected", outage_s=round(time.monotonic() - self.since, 2))
            self.since = None


def _text(raw: bytes) -> str:
    return raw.decode(errors="backslashreplace")
