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
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic
from arq.worker import Function

from ._state import STATE
from .exceptions import TaskArgumentsError, UnknownTaskError, WorkerSettingsError
from .retries import Backoff, BackoffSpec

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
    """An async task function with its options; calling it still calls the function."""

    def __init__(
        self, fn: Callable[P, Awaitable[R]], *, name: str | None = None, options: TaskOptions
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

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


@overload
def task(fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...


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
) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]: ...


def task(
    fn: Callable[P, Awaitable[R]] | None = None,
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
) -> Task[P, R] | Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
    """Give a task its own options: ``@task(max_tries=3, timeout=60, backoff=[1, 5, 30], queue="bulk")``.

    ``backoff``: ``"exponential"`` (2, 4, 8 s ... with jitter), a number of seconds, or a list of per-try delays
    whose last value repeats. ``retry_until``: a datetime, or a duration from the first enqueue, after which
    a failed job is not tried again. ``queue`` is where ``enqueue`` sends the task when the caller names none.
    """
    if max_tries is not None and max_tries < 1:
        raise WorkerSettingsError("max_tries must be at least 1")
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
    )

    def decorate(f: Callable[P, Awaitable[R]]) -> Task[P, R]:
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
