"""Tasks: the ``task()`` decorator, their options, and the checks that run before a job is enqueued.

A task is an ``async def`` taking arq's ``ctx`` first and keyword arguments after it. Its signature is
checked at enqueue (missing, unexpected and ill-typed arguments) and again on the worker, where the JSON
arguments are turned back into the annotated types (datetime, UUID, Decimal, Enum, pydantic models ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import sys
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import pydantic
from arq.worker import Function

from ._state import STATE
from .exceptions import TaskArgumentsError, UnknownTaskError, WorkerSettingsError
from .retries import Backoff, BackoffSpec

if TYPE_CHECKING:
    from datetime import timedelta as _timedelta

    from .client import Job

# build_settings() keeps the user's own WorkerSettings values on the class it builds, under this name.
BUILT_FROM = "__scalr_queue_user_settings__"

P = ParamSpec("P")
R = TypeVar("R")

Seconds = float | int | timedelta


def to_seconds(value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings; ``None`` means the worker's default."""

    max_tries: int | None = None
    timeout_s: float | None = None
    queue: str | None = None
    keep_result_s: float | None = None
    keep_result_forever: bool | None = None
    backoff: Backoff | None = None
    retry_until: datetime | timedelta | None = None
    middleware: tuple[Any, ...] = ()
    unique_for_s: float | None = None
    unique_id: Callable[[dict[str, Any]], str] | None = None
    unique_until_processing: bool = False
    on_failure: Callable[[dict[str, Any], Any], Awaitable[Any]] | None = None

    @property
    def unique(self) -> bool:
        """Whether a second enqueue of the same job, while the first waits (or runs), is deduplicated."""
        return self.unique_for_s is not None or self.unique_id is not None or self.unique_until_processing


class TaskSignature:
    """The arguments a task takes after ``ctx``, and a pydantic model that checks and rebuilds them."""

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params or not _takes_ctx(params[0]):
            raise WorkerSettingsError(
                f"task {name!r} must take arq's ctx as its first argument: async def {name}(ctx, ...)"
                + (f" (its first parameter is {params[0].name!r})" if params else "")
            )
        self.params = params[1:]
        self.positional = [
            p.name for p in self.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        self.accepts_any_positional = any(p.kind is p.VAR_POSITIONAL for p in self.params)
        self.accepts_any_keyword = any(p.kind is p.VAR_KEYWORD for p in self.params)
        self.names = frozenset(
            p.name for p in self.params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
        self.required = [
            p.name
            for p in self.params
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        self._bind_signature = signature.replace(parameters=self.params, return_annotation=signature.empty)
        self._model = _arguments_model(name, fn, self.params, self.accepts_any_keyword)

    def describe(self) -> str:
        """The signature as the user wrote it, without ctx: ``add(x: int, y: int)``."""
        return f"{self.name}{self._bind_signature}".replace("'", "")

    def check(self, kwargs: dict[str, Any]) -> None:
        """Raise TaskArgumentsError unless ``kwargs`` fit the signature, types included."""
        missing = [n for n in self.required if n not in kwargs]
        unexpected = [] if self.accepts_any_keyword else [n for n in kwargs if n not in self.names]
        problems = []
        if missing:
            problems.append("missing " + ", ".join(repr(n) for n in missing))
        if unexpected:
            hint = []
            for name in unexpected:
                close = difflib.get_close_matches(name, sorted(self.names), n=1)
                hint.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
            problems.append("unexpected " + ", ".join(hint))
        if problems:
            raise TaskArgumentsError(f"task {self.name!r}: {'; '.join(problems)}; it takes {self.describe()}")
        self.validate(kwargs)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Stored arguments as the task takes them: positional ones (plain arq jobs) matched to parameter
        names, then converted like ``validate``; returns what stays positional (``*args``) and the keywords."""
        if not args:
            return (), self.validate(kwargs)
        named = dict(zip(self.positional, args, strict=False))
        rest = tuple(args[len(named) :])
        if rest and not self.accepts_any_positional:
            raise TaskArgumentsError(
                f"task {self.name!r} got {len(args)} positional argument(s), it takes at most "
                f"{len(self.positional)}: {self.describe()}"
            )
        twice = sorted(set(named) & set(kwargs))
        if twice:
            raise TaskArgumentsError(f"task {self.name!r} got {', '.join(map(repr, twice))} twice")
        return rest, self.validate({**named, **kwargs})

    def validate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments converted to the annotated types; raises TaskArgumentsError on a mismatch."""
        if self._model is None:
            return kwargs
        try:
            model = self._model.model_validate(kwargs)
        except pydantic.ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"argument {where!r}: {error['msg']} (got {error.get('input')!r})")
            raise TaskArgumentsError(
                f"task {self.name!r}: {'; '.join(problems)}; it takes {self.describe()}"
            ) from None
        values = {name: getattr(model, name) for name in model.model_fields_set}
        if model.model_extra:
            values.update(model.model_extra)
        return values


_CTX_NAMES = frozenset({"ctx", "_ctx", "context", "_"})
_CTX_TYPES = ("dict", "Dict", "Mapping", "MutableMapping", "Any", "Context", "JobContext", "Ctx")


def _takes_ctx(param: inspect.Parameter) -> bool:
    """Whether the first parameter is arq's ctx: positional, and named or annotated like a context."""
    if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
        return False
    if param.name in _CTX_NAMES or param.name.startswith("ctx"):
        return True
    annotation = param.annotation
    if annotation is param.empty:
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    return any(str(text).startswith(kind) or f".{kind}" in str(text) for kind in _CTX_TYPES)


def _arguments_model(
    name: str, fn: Callable[..., Any], params: list[inspect.Parameter], open_ended: bool
) -> type[pydantic.BaseModel] | None:
    """A model with one field per annotated argument, or None when nothing is annotated."""
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        annotation = _resolve(fn, param)
        try:
            pydantic.TypeAdapter(annotation)
        except Exception:
            annotation = Any  # a type pydantic cannot build from JSON: passed through unchecked
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    if all(annotation is Any for annotation, _ in fields.values()):
        return None
    config = pydantic.ConfigDict(extra="allow" if open_ended else "ignore")
    return pydantic.create_model(f"{name}_arguments", __config__=config, **fields)


def _resolve(fn: Callable[..., Any], param: inspect.Parameter) -> Any:
    """One argument's annotation as a type; a string annotation that will not resolve counts as Any."""
    annotation = param.annotation
    if annotation is param.empty:
        return Any
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, getattr(fn, "__globals__", {}))
        except Exception:
            return Any
    return annotation


class Task(Generic[P, R]):
    """An async task function with its options; calling it still calls the function (``ctx`` first).

    ``P`` is the task's parameters without ``ctx``, ``R`` what it returns: ``await t.enqueue(**kwargs)`` is
    checked by mypy against the task's own signature, and its ``Job[R]``'s ``result()`` is typed ``R``."""

    def __init__(
        self,
        fn: Callable[Concatenate[Any, P], Awaitable[R]],
        *,
        name: str | None = None,
        options: TaskOptions,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise WorkerSettingsError(
                f"task {getattr(fn, '__qualname__', fn)!r} must be an async function (async def ...)"
            )
        self.fn = fn
        self.name = name or fn.__name__
        self.options = options
        self.signature = TaskSignature(self.name, fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, ctx: Any, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(ctx, *args, **kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R] | None:
        """Queue a job of this task on the default client (keyword arguments only, as ``enqueue``); None if its
        ``_job_id`` exists. Enqueue options go through ``with_options(...)``."""
        return await self.with_options().enqueue(*args, **kwargs)

    def with_options(
        self,
        *,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: float | _timedelta | None = None,
        _expires: float | _timedelta | None = None,
        _priority: int | None = None,
    ) -> TaskEnqueuer[P, R]:
        """This task with enqueue options: ``await t.with_options(_defer_by=10).enqueue(invoice_id=7)``."""
        options = {
            "_job_id": _job_id,
            "_queue_name": _queue_name,
            "_defer_until": _defer_until,
            "_defer_by": _defer_by,
            "_expires": _expires,
            "_priority": _priority,
        }
        return TaskEnqueuer(self, {k: v for k, v in options.items() if v is not None})

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class TaskEnqueuer(Generic[P, R]):
    """A task with enqueue options, ready to queue (``Task.with_options``)."""

    def __init__(self, task: Task[P, R], options: dict[str, Any]) -> None:
        self.task = task
        self.options = options

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R] | None:
        if args:
            raise TaskArgumentsError(
                f"task {self.task.name!r} takes keyword arguments only at enqueue, not {len(args)} positional"
            )
        from .client import default_client

        values: dict[str, Any] = {**self.options, **kwargs}
        job: Job[R] | None = await default_client().enqueue(self.task, **values)
        return job


@overload
def task(fn: Callable[Concatenate[Any, P], Awaitable[R]], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    max_tries: int | None = None,
    timeout: Seconds | None = None,
    backoff: BackoffSpec | None = None,
    retry_until: datetime | Seconds | None = None,
    queue: str | None = None,
    keep_result: Seconds | None = None,
    middleware: Sequence[Any] = (),
    unique_for: Seconds | None = None,
    unique_id: Callable[[dict[str, Any]], str] | None = None,
    unique_until_processing: bool = False,
    on_failure: Callable[[dict[str, Any], Any], Awaitable[Any]] | None = None,
) -> Callable[[Callable[Concatenate[Any, P], Awaitable[R]]], Task[P, R]]: ...


def task(
    fn: Callable[Concatenate[Any, P], Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    max_tries: int | None = None,
    timeout: Seconds | None = None,
    backoff: BackoffSpec | None = None,
    retry_until: datetime | Seconds | None = None,
    queue: str | None = None,
    keep_result: Seconds | None = None,
    middleware: Sequence[Any] = (),
    unique_for: Seconds | None = None,
    unique_id: Callable[[dict[str, Any]], str] | None = None,
    unique_until_processing: bool = False,
    on_failure: Callable[[dict[str, Any], Any], Awaitable[Any]] | None = None,
) -> Task[P, R] | Callable[[Callable[Concatenate[Any, P], Awaitable[R]]], Task[P, R]]:
    """Give a task its own options: ``@task(max_tries=3, timeout=60, backoff=[1, 5, 30], queue="bulk")``.

    ``backoff``: ``"exponential"`` (2, 4, 8 s ... with jitter), a number of seconds, or a list of per-try delays
    whose last value repeats. ``retry_until``: a datetime, or a duration from the first enqueue, after which
    a failed job is not tried again. ``queue`` is where ``enqueue`` sends the task when the caller names none.

    Unique jobs (docs/middleware.md): with ``unique_for`` (seconds), ``unique_id`` (a function of the kwargs; by
    default the kwargs themselves) or ``unique_until_processing``, an enqueue while the same job waits (or runs,
    unless ``unique_until_processing``) queues nothing and returns the first job's handle. ``on_failure``:
    ``async def hook(ctx, record)``, called once on the worker when the job lands in the failed store.
    """
    if max_tries is not None and max_tries < 1:
        raise WorkerSettingsError("max_tries must be at least 1")
    unique_for_s = to_seconds(unique_for)
    if unique_for_s is not None and not unique_for_s > 0:
        raise WorkerSettingsError(f"unique_for must be more than 0 seconds, not {unique_for!r}")
    if unique_id is not None and not callable(unique_id):
        raise WorkerSettingsError(f"unique_id must be a function of the job's kwargs, not {unique_id!r}")
    if on_failure is not None and not inspect.iscoroutinefunction(on_failure):
        raise WorkerSettingsError(
            f"on_failure must be an async function (async def hook(ctx, record)), not {on_failure!r}"
        )
    options = TaskOptions(
        max_tries=max_tries,
        timeout_s=to_seconds(timeout),
        queue=queue,
        keep_result_s=to_seconds(keep_result),
        backoff=None if backoff is None else Backoff.parse(backoff),
        retry_until=retry_until
        if isinstance(retry_until, datetime | None)
        else timedelta(seconds=to_seconds(retry_until) or 0),
        middleware=tuple(middleware),
        unique_for_s=unique_for_s,
        unique_id=unique_id,
        unique_until_processing=bool(unique_until_processing),
        on_failure=on_failure,
    )

    def decorate(f: Callable[Concatenate[Any, P], Awaitable[R]]) -> Task[P, R]:
        return Task(f, name=name, options=options)

    return decorate(fn) if fn is not None else decorate


def as_task(obj: Any) -> Task[..., Any]:
    """A Task from whatever a tasks list or arq's ``functions`` may hold."""
    if isinstance(obj, Task):
        return obj
    wrapped = getattr(obj, "__scalr_task__", None)
    if isinstance(wrapped, Task):
        return wrapped
    if isinstance(obj, Function):
        inner = as_task(obj.coroutine)
        overrides = {
            "max_tries": obj.max_tries,
            "timeout_s": obj.timeout_s,
            "keep_result_s": obj.keep_result_s,
            "keep_result_forever": obj.keep_result_forever,
        }
        set_here: dict[str, Any] = {name: value for name, value in overrides.items() if value is not None}
        return Task(inner.fn, name=obj.name, options=dataclasses.replace(inner.options, **set_here))
    if isinstance(obj, str):
        module_name, _, attr = obj.rpartition(".")
        try:
            return as_task(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError, ValueError) as exc:
            raise WorkerSettingsError(f"cannot import task {obj!r}: {exc}") from None
    if callable(obj):
        return Task(obj, options=TaskOptions())
    raise WorkerSettingsError(f"{obj!r} is not a task: list async functions (or task(...)-decorated ones)")


class TaskRegistry:
    """Tasks by name, as a worker module registers them."""

    def __init__(self, tasks: Iterable[Task[..., Any]], *, source: str = "the tasks list") -> None:
        self.source = source
        self.tasks: dict[str, Task[..., Any]] = {}
        for t in tasks:
            if t.name in self.tasks and self.tasks[t.name].fn is not t.fn:
                raise WorkerSettingsError(f"two tasks in {source} are named {t.name!r}; give one a name=")
            self.tasks[t.name] = t

    def __contains__(self, name: object) -> bool:
        return name in self.tasks

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self.tasks)

    def get(self, name: str) -> Task[..., Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self.tasks), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return (
            f"unknown task {name!r}: {hint}{self.source} registers {', '.join(sorted(self.tasks)) or 'none'}"
        )


def import_worker_module(path: str) -> ModuleType:
    """Import ``src.worker`` the way ``python -m`` would, from the current directory."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name and path.startswith(exc.name):
            raise WorkerSettingsError(
                f"cannot import worker module {path!r}: no module named {exc.name!r} "
                f"(run from the directory that contains it, or fix the dotted path)"
            ) from None
        raise


def module_tasks(module: ModuleType) -> list[Task[..., Any]]:
    """The tasks a worker module registers: its ``tasks`` list, or its WorkerSettings' functions and crons."""
    settings = getattr(module, "WorkerSettings", None)
    if settings is not None:
        functions = _settings_attr(settings, "functions") or []
        crons = _settings_attr(settings, "cron_jobs") or []
    else:
        functions = getattr(module, "tasks", None) or []
        crons = getattr(module, "cron_jobs", None) or []
    return [as_task(f) for f in functions] + [cron_task(c) for c in crons]


def cron_task(cron_job: Any) -> Task[..., Any]:
    """The task a cron entry runs, under the cron entry's name (arq's ``cron:<function>``)."""
    inner = as_task(cron_job.coroutine)
    options = TaskOptions(
        max_tries=cron_job.max_tries,
        timeout_s=cron_job.timeout_s,
        keep_result_s=cron_job.keep_result_s,
        keep_result_forever=cron_job.keep_result_forever,
    )
    return Task(inner.fn, name=cron_job.name, options=options)


def _settings_attr(settings: Any, name: str) -> Any:
    if isinstance(settings, dict):
        return settings.get(name)
    built = vars(settings).get(BUILT_FROM)  # a class made by build_settings: read what the user gave
    if built is not None:
        return built.get(name)
    return getattr(settings, name, None)


def registry_for(module_path: str) -> TaskRegistry:
    """The registry of a worker module, imported once per process (``SCALR_QUEUE_TASKS``)."""
    registry: TaskRegistry | None = STATE.registries.get(module_path)
    if registry is None:
        module = import_worker_module(module_path)
        registry = TaskRegistry(module_tasks(module), source=f"{module_path!r}")
        STATE.registries[module_path] = registry
    return registry
