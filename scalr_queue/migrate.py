"""Moving waiting jobs from another queue key (plain arq's ``arq:queue``) into a scalr_queue queue.

A plain arq producer enqueues pickled jobs on ``arq:queue``; scalr_queue's worker serves ``arq:queue:<name>`` and
never unpickles. ``migrate`` moves the jobs that wait (queued or deferred, not running) one at a time, each in one
Lua script, keeping the job id, its score (when it may run), its try counter and its data's expiry:

- a JSON job record moves as it is;
- a pickled one moves only with ``unpickle=True``, re-encoded as JSON: unpickling runs code stored in Redis, so
  only an operator who trusts that data asks for it. Without it a pickle is never loaded; its task name is read
  by disassembling the pickle (``pickletools``), which runs nothing;
- anything else (a running job, expired data, arguments that are not JSON-able, bytes that are no job) is left
  where it is, with the reason.

The script checks that the job is still waiting in the source, not running, and that its data is the data that
was read; only then does it write the new data and move the id, so a worker never sees a half-moved job and two
runs never move a job twice. A plain arq worker claims a job with a ``WATCH`` on its in-progress key: the script
touches that key, so a claim racing the move fails and the arq worker skips the job.
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from . import keys, wire
from ._lua import scripts
from .exceptions import CommandInputError, SerializationError, UndecodableJobError
from .records import PICKLE_MARK, JobRecord

BATCH = 500  # jobs read per round trip
_MEMO_OPS = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})


class Kind(StrEnum):
    """What a waiting job's data was."""

    json = "json"
    pickle = "pickle"
    unknown = "unknown"


@dataclass(frozen=True, slots=True)
class MovedJob:
    job_id: str
    task: str
    kind: Kind  # what it was: JSON moved as it is, a pickle re-encoded


@dataclass(frozen=True, slots=True)
class LeftJob:
    job_id: str
    task: str | None  # None: not readable without running code, or no job at all
    reason: str


@dataclass
class MigrationReport:
    """What ``migrate`` did (or, in a dry run, would do): jobs moved and jobs left, with the reason."""

    source: str
    destination: str
    dry_run: bool
    moved: list[MovedJob] = field(default_factory=list)
    left: list[LeftJob] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # ids a worker took, or that ended, while migrate ran


@dataclass(frozen=True, slots=True)
class _Plan:
    job_id: str
    task: str
    kind: Kind
    read: bytes
    new: bytes | None  # None: moves as it is


def pickled_task(raw: bytes) -> str | None:
    """The task name inside a pickled arq job, read by disassembling the pickle: nothing in it is run."""
    try:
        expect_name = False
        for opcode, arg, _ in pickletools.genops(raw):
            if opcode.name in _MEMO_OPS:
                continue
            if expect_name:
                return arg if isinstance(arg, str) else None
            expect_name = arg == "f" and isinstance(arg, str)
    except Exception:  # a truncated or odd pickle: the name is unknown, nothing else changes
        return None
    return None


def reencode(raw: bytes) -> JobRecord:
    """A pickled arq job as a JSON-ready record. Unpickles ``raw``: this runs code stored in Redis."""
    try:
        data = pickle.loads(raw)  # the operator asked for it (--unpickle)
    except Exception as exc:
        raise UndecodableJobError(f"cannot unpickle it: {type(exc).__name__}: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise UndecodableJobError(f"the unpickled value is {type(data).__name__}, not an arq job")
    if "et" not in data:
        data = {**data, "et": int(time.time() * 1000)}
    if isinstance(data.get("a"), tuple):  # pickle keeps arq's tuple of positional arguments
        data = {**data, "a": list(data["a"])}
    record = JobRecord.from_dict(data)
    positional = {f"positional argument {n}": value for n, value in enumerate(record.args, 1)}
    for name, value in {**positional, **record.kwargs}.items():
        if not isinstance(name, str):
            raise UndecodableJobError(f"a keyword argument name is {name!r}, not a string")
        wire.encode_arguments(
            record.task, {name: value}, {name: value}
        )  # enqueue's checks, enqueue's message
    return record


def _task_name(raw: bytes | None) -> str | None:
    """The task a job's data names, read without unpickling; None if there is no readable name."""
    if raw is None:
        return None
    if raw.startswith(PICKLE_MARK):
        return pickled_task(raw)
    try:
        return JobRecord.decode(raw).task
    except SerializationError:
        return None


def _plan(job_id: str, raw: bytes | None, running: bool, unpickle: bool) -> _Plan | LeftJob:
    """What to do with one waiting job: move it (as it is or re-encoded), or leave it and why."""
    task = _task_name(raw)
    if running:
        return LeftJob(job_id, task, "running: its worker holds it")
    if raw is None:
        return LeftJob(job_id, None, "its data is gone (expired): no worker can run it")
    if raw.startswith(PICKLE_MARK):
        if not unpickle:
            return LeftJob(
                job_id,
                task,
                "pickled: --unpickle re-encodes it as JSON (unpickling runs code from Redis: only for data "
                "you trust)",
            )
        try:
            record = reencode(raw)
            new = record.encode()
            JobRecord.decode(new)
        except SerializationError as exc:
            return LeftJob(job_id, task, f"pickled, not movable: {exc}")
        return _Plan(job_id, record.task, Kind.pickle, raw, new)
    try:
        record = JobRecord.decode(raw)
    except SerializationError as exc:
        return LeftJob(job_id, None, f"not a job scalr_queue can run: {exc}")
    return _Plan(job_id, record.task, Kind.json, raw, None)


async def migrate(
    redis: Redis, source: str, destination: str, *, unpickle: bool = False, dry_run: bool = False
) -> MigrationReport:
    """Move the jobs waiting in ``source`` to ``destination`` (queue names or keys); see the module docstring.

    With ``dry_run`` nothing is written (with ``unpickle`` the pickles are still loaded, to say which can move).
    """
    source_key, destination_key = keys.queue_key(source), keys.queue_key(destination)
    if source_key == destination_key:
        raise CommandInputError(f"{source_key} is both the source and the destination: nothing to move")
    for key in (source_key, destination_key):
        kind = (await redis.type(key)).decode()
        if kind not in ("zset", "none"):
            raise CommandInputError(f"{key} holds a {kind}, not a queue (a sorted set)")
    report = MigrationReport(source_key, destination_key, dry_run)
    ids: list[str] = []
    async for member, _ in redis.zscan_iter(source_key):  # ZSCAN may repeat a member: kept once
        try:
            ids.append(member.decode())
        except UnicodeDecodeError:
            report.left.append(LeftJob(repr(member), None, "its id is not UTF-8: no worker can run it"))
    ids = list(dict.fromkeys(ids))
    move = scripts(redis).migrate
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        async with redis.pipeline(transaction=True) as pipe:  # one consistent read of the batch
            for job_id in batch:
                pipe.zscore(source_key, job_id)
                pipe.get(keys.job_key(job_id))
                pipe.exists(keys.in_progress_key(job_id))
            found = await pipe.execute()
        for n, job_id in enumerate(batch):
            score, raw, running = found[3 * n : 3 * n + 3]
            if score is None:  # run and finished (or moved) since the scan
                report.gone.append(job_id)
                continue
            planned = _plan(job_id, raw, bool(running), unpickle)
            if isinstance(planned, LeftJob):
                report.left.append(planned)
            elif dry_run:
                report.moved.append(MovedJob(job_id, planned.task, planned.kind))
            else:
                outcome = await _move(move, planned, source_key, destination_key)
                if outcome == "moved":
                    report.moved.append(MovedJob(job_id, planned.task, planned.kind))
                elif outcome == "running":
                    report.left.append(LeftJob(job_id, planned.task, "running: its worker holds it"))
                elif outcome == "changed":
                    report.left.append(LeftJob(job_id, planned.task, "changed while being read: run again"))
                else:
                    report.gone.append(job_id)
    return report


async def _move(move: Any, plan: _Plan, source_key: str, destination_key: str) -> str:
    """Run the move script for one job: 'moved', or why not ('gone': taken or finished meanwhile)."""
    outcome = await move(
        keys=[
            source_key,
            destination_key,
            keys.job_key(plan.job_id),
            keys.in_progress_key(plan.job_id),
            keys.QUEUES_KEY,
            keys.notify_key(destination_key),
        ],
        args=[
            plan.job_id,
            hashlib.sha1(plan.read).hexdigest(),
            plan.new if plan.new is not None else b"",
            keys.queue_name(destination_key),
            int(time.time() * 1000),
            keys.NOTIFY_CAP,
        ],
    )
    return outcome.decode() if isinstance(outcome, bytes) else str(outcome)
