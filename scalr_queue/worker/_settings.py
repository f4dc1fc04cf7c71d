"""Turn a worker module (``tasks = [...]``) or a WorkerSettings class into a complete arq WorkerSettings.

The class built here runs unchanged under ``python -m scalr_queue.worker`` and plain ``python -m arq``:
every value sits in its own ``__dict__`` (arq reads nothing inherited), tasks are wrapped for JSON, timeouts
and logs, and our hooks run around the user's ``on_startup``/``on_shutdown``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any
from urllib.parse import quote

from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function, Worker

from .. import keys, wire
from ..config import Settings, get_settings, redact_url
from ..connection import redis_info
from ..exceptions import WorkerSettingsError
from ..execution import STATE_KEY, JobDefaults, WorkerState, job_coroutine
from ..failed import FailedStore
from ..health import Heartbeat, new_worker_id
from ..logs import configure_logging, get_logger
from ..tasks import BUILT_FROM, Task, as_task, cron_task, import_worker_module, to_seconds

log = get_logger("scalr_queue.worker")

ARQ_SETTINGS = frozenset(inspect.signature(Worker).parameters)
# arq cancels a try at its own timeout; ours fires first, inside the task, so the try ends as a clean error.
TIMEOUT_BACKSTOP_S = 5.0
HEARTBEAT_CTX_KEY = "scalr_queue_heartbeat"
ARQ_HEALTH_CHECK_INTERVAL_S = 30
_JSON_ONLY = ("job_serializer", "job_deserializer")


def user_settings(settings_cls: Any) -> dict[str, Any]:
    """A WorkerSettings class (or dict) as one flat dict, inherited values included, names checked."""
    if isinstance(settings_cls, dict):
        values = dict(settings_cls)
    elif BUILT_FROM in vars(settings_cls):
        return dict(vars(settings_cls)[BUILT_FROM])
    else:
        values = {}
        for klass in reversed(settings_cls.__mro__[:-1]):  # base classes first, so subclasses win
            for name in vars(klass):
                if not name.startswith("_"):
                    values[name] = getattr(settings_cls, name)
    for name in values:
        if name not in ARQ_SETTINGS:
            close = difflib.get_close_matches(name, sorted(ARQ_SETTINGS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise WorkerSettingsError(
                f"WorkerSettings.{name} is not a worker setting arq knows ({hint}arq would silently ignore it)"
            )
    for name in _JSON_ONLY:
        if name in values:
            raise WorkerSettingsError(
                f"WorkerSettings.{name} is not supported: scalr_queue always stores jobs as JSON (no pickle)"
            )
    return values


def build_settings(
    settings_cls: Any = None,
    /,
    *,
    tasks: Sequence[Any] | None = None,
    cron_jobs: Sequence[CronJob] | None = None,
    queue: str | None = None,
    settings: Settings | None = None,
) -> type:
    """A complete arq WorkerSettings class, from a WorkerSettings class (completed) or from ``tasks``.

    Put ``WorkerSettings = build_settings(tasks=tasks)`` in a worker module and plain
    ``python -m arq src.worker.WorkerSettings`` (and ``arq --check``) runs it just as scalr_queue does.
    """
    user: dict[str, Any] = {} if settings_cls is None else user_settings(settings_cls)
    if tasks is not None:
        user["functions"] = list(tasks)
    if cron_jobs is not None:
        user["cron_jobs"] = list(cron_jobs)
    return _complete(user, queue=queue, settings=settings or get_settings(), source="WorkerSettings")


def settings_for_module(
    module: ModuleType | str, *, queue: str | None = None, settings: Settings | None = None
) -> type:
    """The WorkerSettings the launcher runs for a module: its WorkerSettings class, else its ``tasks``."""
    if isinstance(module, str):
        module = import_worker_module(module)
    settings = settings or get_settings()
    declared = getattr(module, "WorkerSettings", None)
    if declared is not None:
        return _complete(
            user_settings(declared),
            queue=queue,
            settings=settings,
            source=f"{module.__name__}.WorkerSettings",
        )
    tasks = getattr(module, "tasks", None)
    if tasks is None or not isinstance(tasks, (list, tuple)) or not tasks:
        found = (
            "an empty tasks list"
            if isinstance(tasks, (list, tuple))
            else "no tasks list"
            if tasks is None
            else f"tasks = {tasks!r}"
        )
        raise WorkerSettingsError(
            f"worker module {module.__name__!r} must export tasks = [...] (a non-empty list of async task "
            f"functions) or a WorkerSettings class; found {found}"
        )
    user: dict[str, Any] = {"functions": list(tasks)}
    crons = getattr(module, "cron_jobs", None)
    if crons:
        user["cron_jobs"] = list(crons)
    return _complete(user, queue=queue, settings=settings, source=f"module {module.__name__!r}")


def redis_url_of(user: dict[str, Any], settings: Settings) -> str:
    """The Redis URL a WorkerSettings means: its ``redis_settings`` if it has them, else ``REDIS_URL``."""
    rs = user.get("redis_settings")
    if rs is None:
        return settings.redis_url
    if not isinstance(rs, RedisSettings) or rs.sentinel or not isinstance(rs.host, str):
        raise WorkerSettingsError(
            "WorkerSettings.redis_settings must be arq RedisSettings for one server (no Sentinel)"
        )
    auth = ""
    if rs.username or rs.password:
        auth = f"{quote(rs.username or '', safe='')}:{quote(rs.password or '', safe='')}@"
    if rs.unix_socket_path:
        return f"unix://{auth}{rs.unix_socket_path}?db={rs.database}"
    return f"{'rediss' if rs.ssl else 'redis'}://{auth}{rs.host}:{rs.port}/{rs.database}"


def _complete(user: dict[str, Any], *, queue: str | None, settings: Settings, source: str) -> type:
    functions = list(user.get("functions") or [])
    crons: list[CronJob] = list(user.get("cron_jobs") or [])
    if not functions and not crons:
        raise WorkerSettingsError(
            f"{source} registers no tasks: give it functions = [...] (async task functions) or cron_jobs = [...]"
        )
    if any(not isinstance(c, CronJob) for c in crons):
        raise WorkerSettingsError(f"{source}: cron_jobs must hold arq cron(...) entries")
    redis_url = redis_url_of(user, settings)
    settings = settings.model_copy(update={"redis_url": redis_url})
    job_timeout = to_seconds(user.get("job_timeout", settings.job_timeout)) or settings.job_timeout
    keep_forever = bool(user.get("keep_result_forever"))
    queue_key = keys.queue_key(queue or user.get("queue_name") or settings.name)
    tasks = [as_task(f) for f in functions]
    cron_tasks = [cron_task(c) for c in crons]
    names = [t.name for t in tasks + cron_tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkerSettingsError(
            f"{source} registers more than one task named {', '.join(map(repr, duplicates))}"
        )

    defaults = JobDefaults(
        timeout_s=job_timeout,
        max_tries=user.get("max_tries", settings.max_tries),
        backoff=settings.default_backoff,
    )
    on_startup, on_shutdown = _hooks(
        user, settings, queue_key, names, max_jobs=user.get("max_jobs", settings.concurrency)
    )
    values: dict[str, Any] = {
        **user,
        "functions": [_arq_function(t, defaults, keep_forever) for t in tasks],
        "cron_jobs": [_arq_cron(c, t, defaults) for c, t in zip(crons, cron_tasks, strict=True)],
        "queue_name": queue_key,
        "redis_settings": RedisSettings.from_dsn(redis_url)
        if "redis_settings" not in user
        else user["redis_settings"],
        "max_jobs": user.get("max_jobs", settings.concurrency),
        "job_timeout": job_timeout + TIMEOUT_BACKSTOP_S,
        "max_tries": defaults.max_tries,
        "keep_result": user.get("keep_result", settings.keep_result),
        # arq crashes on a failed job when this is set worker-wide (arq #531); it moved onto each function.
        "keep_result_forever": False,
        # arq's shared key: refreshed every 30 s so `arq --check` works; our own probe uses per-worker heartbeats.
        "health_check_interval": user.get("health_check_interval", ARQ_HEALTH_CHECK_INTERVAL_S),
        "job_serializer": wire.dumps,
        "job_deserializer": wire.loads,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        BUILT_FROM: user,
        "__scalr_queue_settings__": settings,
    }
    return type("WorkerSettings", (), values)


def _arq_function(t: Task[..., Any], defaults: JobDefaults, keep_forever: bool) -> Function:
    return Function(
        name=t.name,
        coroutine=job_coroutine(t, defaults),
        timeout_s=(t.options.timeout_s or defaults.timeout_s) + TIMEOUT_BACKSTOP_S,
        keep_result_s=t.options.keep_result_s,
        keep_result_forever=t.options.keep_result_forever or (True if keep_forever else None),
        max_tries=t.options.max_tries,
    )


def _arq_cron(cron: CronJob, t: Task[..., Any], defaults: JobDefaults) -> CronJob:
    timeout = cron.timeout_s or defaults.timeout_s
    return dataclasses.replace(
        cron,
        coroutine=job_coroutine(t, defaults),
        timeout_s=timeout + TIMEOUT_BACKSTOP_S,
        next_run=None,
    )


def _hooks(
    user: dict[str, Any], settings: Settings, queue_key: str, names: list[str], *, max_jobs: int
) -> tuple[Any, Any]:
    user_startup = user.get("on_startup")
    user_shutdown = user.get("on_shutdown")

    async def on_startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.log_format, settings.log_level)
        state = WorkerState(worker_id=new_worker_id(), queue=queue_key, tasks=names)
        state.engine_records_failures = bool(ctx.get("scalr_queue_engine"))  # see worker/_engine.py
        ctx[STATE_KEY] = state
        state.failed_store = FailedStore(
            ctx["redis"], max_age_s=settings.failed_max_age, max_count=settings.failed_max_count
        )
        if user_startup is not None:
            await user_startup(ctx)
        redis = ctx["redis"]
        info = await redis_info(redis)
        heartbeat = Heartbeat(redis, state, settings.health_interval)
        await heartbeat.start()
        ctx[HEARTBEAT_CTX_KEY] = heartbeat
        log.info(
            "worker_started",
            worker_id=state.worker_id,
            queue=keys.queue_name(queue_key),
            tasks=names,
            concurrency=max_jobs,
            redis_url=redact_url(settings.redis_url),
            redis_version=info.get("redis_version"),
        )
        await _warn_if_evicting(redis)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        heartbeat: Heartbeat | None = ctx.pop(HEARTBEAT_CTX_KEY, None)
        if heartbeat is not None:
            await heartbeat.stop()
        if user_shutdown is not None:
            await user_shutdown(ctx)
        state: WorkerState | None = ctx.get(STATE_KEY)
        if state is not None:
            log.info(
                "worker_stopped",
                worker_id=state.worker_id,
                succeeded=state.succeeded,
                failed=state.failed,
                retried=state.retried,
            )

    return on_startup, on_shutdown


async def _warn_if_evicting(redis: Any) -> None:
    """An evicted job is a lost job: say so when the server may evict keys. A server refusing CONFIG is fine."""
    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except Exception:
        return
    if policy and policy != "noeviction":
        log.warning(
            "redis_may_evict_jobs",
            maxmemory_policy=policy,
            fix="set maxmemory-policy noeviction on the Redis server that holds the queue",
        )
