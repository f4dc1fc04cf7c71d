"""From a worker module (``tasks = [...]``) or a WorkerSettings class to a worker.

``worker_options`` gives the keyword options of our ``Worker`` (the launcher's path). ``build_settings`` gives a
complete arq WorkerSettings class whose tasks go through the same runner, for plain ``python -m arq``: there
arq's loop runs them, and a small adapter (``_arq_adapter.py``) turns each outcome into what arq expects.
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
from arq.worker import Function
from arq.worker import Worker as ArqWorker

from .. import keys, wire
from ..config import Settings, get_settings
from ..exceptions import WorkerSettingsError
from ..tasks import BUILT_FROM, as_task, cron_task, import_worker_module, to_seconds
from ._arq_adapter import arq_hooks, arq_plan, job_coroutine

# arq Worker's options, and ours: what a WorkerSettings class may hold.
ARQ_SETTINGS = frozenset(inspect.signature(ArqWorker).parameters)
OUR_SETTINGS = frozenset({"middleware"})
# arq cancels a try at its own timeout; ours fires first, inside the task, so the try ends as a clean error.
TIMEOUT_BACKSTOP_S = 5.0
ARQ_HEALTH_CHECK_INTERVAL_S = 30
_JSON_ONLY = ("job_serializer", "job_deserializer")
SETTINGS_KEY = "__scalr_queue_settings__"


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
    allowed = ARQ_SETTINGS | OUR_SETTINGS
    for name in values:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
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


def module_settings(module: ModuleType | str) -> tuple[dict[str, Any], str]:
    """What a worker module declares: its WorkerSettings class, else its ``tasks`` (and ``cron_jobs``,
    ``middleware``); and how to name it in errors."""
    if isinstance(module, str):
        module = import_worker_module(module)
    declared = getattr(module, "WorkerSettings", None)
    if declared is not None:
        return user_settings(declared), f"{module.__name__}.WorkerSettings"
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
    for name in ("cron_jobs", "middleware"):
        value = getattr(module, name, None)
        if value:
            user[name] = list(value)
    return user, f"module {module.__name__!r}"


def worker_options(
    module: ModuleType | str, *, queue: str | None = None, settings: Settings | None = None
) -> tuple[dict[str, Any], Settings]:
    """Our Worker's keyword options for a worker module, and the settings it runs with (Redis URL resolved)."""
    user, source = module_settings(module)
    settings = settings or get_settings()
    _check(user, source)
    settings = settings.model_copy(update={"redis_url": redis_url_of(user, settings)})
    options = {k: v for k, v in user.items() if k != "redis_settings"}
    options["queue_name"] = keys.queue_key(queue or user.get("queue_name") or settings.name)
    return options, settings


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
    ``python -m arq src.worker.WorkerSettings`` (and ``arq --check``) runs it, through the same runner;
    ``python -m scalr_queue.worker src.worker`` runs the same module with scalr_queue's worker.
    """
    user: dict[str, Any] = {} if settings_cls is None else user_settings(settings_cls)
    if tasks is not None:
        user["functions"] = list(tasks)
    if cron_jobs is not None:
        user["cron_jobs"] = list(cron_jobs)
    settings = settings or get_settings()
    _check(user, "WorkerSettings")
    redis_url = redis_url_of(user, settings)
    settings = settings.model_copy(update={"redis_url": redis_url})
    queue_key = keys.queue_key(queue or user.get("queue_name") or settings.name)
    job_timeout = to_seconds(user.get("job_timeout")) or settings.job_timeout
    defaults = {
        "job_timeout": job_timeout,
        "max_tries": user.get("max_tries", settings.max_tries),
        "keep_result": to_seconds(user.get("keep_result")) if "keep_result" in user else settings.keep_result,
        "keep_result_forever": bool(user.get("keep_result_forever")),
        "backoff": settings.default_backoff,
    }
    functions, crons = [], []
    for entry in user.get("functions") or []:
        t = as_task(entry)
        plan = arq_plan(t, defaults, is_cron=False)
        functions.append(
            Function(
                name=t.name,
                coroutine=job_coroutine(plan, queue_key, settings),
                timeout_s=plan.timeout_s + TIMEOUT_BACKSTOP_S,
                keep_result_s=t.options.keep_result_s,
                keep_result_forever=plan.keep_result_ms is None or None,
                max_tries=plan.max_tries,
            )
        )
    for cron in user.get("cron_jobs") or []:
        plan = arq_plan(cron_task(cron), defaults, is_cron=True)
        crons.append(
            dataclasses.replace(
                cron,
                coroutine=job_coroutine(plan, queue_key, settings),
                timeout_s=plan.timeout_s + TIMEOUT_BACKSTOP_S,
                next_run=None,
            )
        )
    on_startup, on_shutdown = arq_hooks(
        user, settings, queue_key, [f.name for f in functions] + [c.name for c in crons]
    )
    values: dict[str, Any] = {
        **{k: v for k, v in user.items() if k not in OUR_SETTINGS},
        "functions": functions,
        "cron_jobs": crons,
        "queue_name": queue_key,
        "redis_settings": user.get("redis_settings") or RedisSettings.from_dsn(redis_url),
        "max_jobs": user.get("max_jobs", settings.concurrency),
        "job_timeout": job_timeout + TIMEOUT_BACKSTOP_S,
        "max_tries": defaults["max_tries"],
        "keep_result": defaults["keep_result"],
        # arq crashes on a failed job when this is set worker-wide (arq #531); it moved onto each function.
        "keep_result_forever": False,
        # arq's shared key: refreshed every 30 s so `arq --check` works; our own probe uses per-worker heartbeats.
        "health_check_interval": user.get("health_check_interval", ARQ_HEALTH_CHECK_INTERVAL_S),
        "job_serializer": wire.dumps,
        "job_deserializer": wire.loads,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        BUILT_FROM: user,
        SETTINGS_KEY: settings,
    }
    return type("WorkerSettings", (), values)


def _check(user: dict[str, Any], source: str) -> None:
    functions = list(user.get("functions") or [])
    crons = list(user.get("cron_jobs") or [])
    if not functions and not crons:
        raise WorkerSettingsError(
            f"{source} registers no tasks: give it functions = [...] (async task functions) or cron_jobs = [...]"
        )
    if any(not isinstance(c, CronJob) for c in crons):
        raise WorkerSettingsError(f"{source}: cron_jobs must hold arq cron(...) entries")
    names = [as_task(f).name for f in functions] + [cron_task(c).name for c in crons]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkerSettingsError(
            f"{source} registers more than one task named {', '.join(map(repr, duplicates))}"
        )


def redis_url_of(user: dict[str, Any], settings: Settings) -> str:
    """The Redis URL a WorkerSettings means: its ``redis_settings`` if it has them, else ``REDIS_URL``."""
    rs = user.get("redis_settings")
    return settings.redis_url if rs is None else redis_url_from_settings(rs)


def redis_url_from_settings(rs: Any) -> str:
    """arq RedisSettings for one server as a URL (the form scalr_queue's connections are made from)."""
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
