"""What every ``scalr-queue`` command shares: one-line errors, ``--redis-url``, a Redis session, output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import click
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from ..config import Settings, get_settings, reset_settings
from ..connection import REDIS_DOWN_ERRORS, create_redis, no_permission, permission_denied, unavailable
from ..exceptions import CommandInputError, ScalrQueueError
from ..failed import FailedStore

__all__ = ["CommandInputError", "Session", "on_redis", "print_json", "print_table", "user_errors"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def user_errors(fn: F) -> F:
    """A scalr_queue error is the user's to fix: one line on stderr and exit code 1, no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ScalrQueueError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _use_redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ["REDIS_URL"] = value
        reset_settings()


redis_url_option = click.option(
    "--redis-url",
    metavar="URL",
    expose_value=False,
    is_eager=True,
    callback=_use_redis_url,
    help="Redis to use instead of REDIS_URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@dataclass
class Session:
    settings: Settings
    redis: ArqRedis
    store: FailedStore


async def _in_session(action: Callable[[Session], Awaitable[T]]) -> T:
    settings = get_settings()
    redis = create_redis(settings)
    store = FailedStore(redis, max_age_s=settings.failed_max_age, max_count=settings.failed_max_count)
    try:
        return await action(Session(settings, redis, store))
    except REDIS_DOWN_ERRORS as exc:
        raise unavailable(settings, exc) from exc
    except ResponseError as exc:
        if not permission_denied(exc):
            raise
        raise no_permission(settings, exc) from exc
    finally:
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await redis.aclose(close_connection_pool=True)


def on_redis(action: Callable[[Session], Awaitable[T]]) -> T:
    """Run ``action`` with a Redis connection from the settings; Redis down becomes a one-line error."""
    return asyncio.run(_in_session(action))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def one_line(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_UNIT_S = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` or ``1h30m``, in seconds."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or _DURATION.sub("", value).strip():
        raise CommandInputError(f"{text!r} is not a duration: use e.g. 90s, 15m, 2h, 7d or 1h30m")
    return sum(float(number) * _UNIT_S[unit.lower()] for number, unit in parts)
