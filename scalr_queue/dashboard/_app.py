"""The dashboard's routes: pages that read Redis, and POST actions that redirect back (post/redirect/get)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from arq.connections import ArqRedis
from jinja2 import Environment
from redis.exceptions import ResponseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import keys, queues, timeline
from ..client import Client, default_client
from ..config import Settings, get_settings
from ..connection import redis_call
from ..exceptions import RedisUnavailableError
from ..failed import FailedStore
from . import _listing as listing
from . import _reads as reads
from ._chart import chart
from ._web import ForbiddenError, checked_form, environment, redirect, render

log = logging.getLogger("scalr_queue.dashboard")
STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Session:
    redis: ArqRedis
    store: FailedStore


class Dashboard:
    """What every request needs: settings, templates, and a Redis session bounded by ``redis_timeout``."""

    def __init__(self, settings: Settings | None, read_only: bool) -> None:
        self._settings = settings
        self.read_only = read_only
        self.env: Environment = environment()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """The event loop's shared pool (the host app's, when its lifespan opened one), or, for a dashboard
        given its own settings, a pool of its own per event loop."""
        settings = self.settings
        if self._settings is None:
            client = default_client()
        else:
            loop = asyncio.get_running_loop()
            client = self._clients.get(loop) or self._clients.setdefault(loop, Client(self._settings))
        redis = client.redis
        store = FailedStore(redis, max_age_s=settings.failed_max_age, max_count=settings.failed_max_count)
        async with redis_call(settings):
            yield Session(redis, store)

    def page(self, request: Request, template: str, status: int = 200, **context: object) -> Response:
        return render(request, self.env, template, status, **context)


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


async def overview_page(request: Request) -> Response:
    d = _dashboard(request)
    async with d.session() as s:
        data = await reads.overview(s.redis, s.store)
    return d.page(request, "overview.html", overview=data, chart=chart(data.chart), active="queues")


async def queue_page(request: Request) -> Response:
    d = _dashboard(request)
    name = request.path_params["queue"]
    state = _state(request.query_params.get("state"))
    task = request.query_params.get("task", "").strip() or None
    start = _int(request.query_params.get("start"))
    async with d.session() as s:
        if name not in await reads.known_queues(s.redis):
            return d.page(request, "missing.html", 404, what=f"queue {name!r}", active="queues")
        row = await reads.queue_row(s.redis, s.store, name)
        minutes = await timeline.last_hour(s.redis, [name])
        page = await listing.page(s.redis, s.store, name, state, start=start, task=task)
    page.count = (
        row.ready
        if state is listing.State.queued
        else None  # aborted: picked out of the failed store, not counted
        if state is listing.State.aborted
        else page.total
    )
    return d.page(
        request,
        "queue.html",
        queue=row,
        chart=chart(minutes),
        page=page,
        states=list(listing.State),
        active="queues",
    )


async def failed_page(request: Request) -> Response:
    d = _dashboard(request)
    queue = request.query_params.get("queue", "").strip() or None
    task = request.query_params.get("task", "").strip() or None
    start = _int(request.query_params.get("start"))
    async with d.session() as s:
        page = await listing.failed_page(s.store, queue, start=start, task=task)
        page.count = page.total
        names = await reads.known_queues(s.redis)
    return d.page(request, "failed.html", page=page, queues=names, active="failed")


async def job_page(request: Request) -> Response:
    d = _dashboard(request)
    job_id = request.path_params["job_id"]
    async with d.session() as s:
        view = await reads.job(s.redis, job_id)
    if view is None:
        return d.page(request, "missing.html", 404, what=f"job {job_id!r}", active="")
    return d.page(request, "job.html", job=view, active="")


async def search(request: Request) -> Response:
    job_id = request.query_params.get("id", "").strip()
    if not job_id:
        return redirect(request, "/")
    return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/jobs/{_quote(job_id)}", 303)


async def workers_page(request: Request) -> Response:
    d = _dashboard(request)
    async with d.session() as s:
        names = await reads.known_queues(s.redis)
        rows = await reads.workers(s.redis, names)
    return d.page(request, "workers.html", workers=rows, active="workers")


async def retry_action(request: Request) -> Response:
    form = await checked_form(request)
    job_id = form.get("job_id", "")
    async with _dashboard(request).session() as s:
        try:
            done = await s.store.retry(job_id)
        except (ValueError, TypeError):  # running again already, or a corrupt record
            done = False
    return redirect(request, _back(form), done="retried" if done else "retry-none", n=int(done))


async def retry_all_action(request: Request) -> Response:
    form = await checked_form(request)
    async with _dashboard(request).session() as s:
        done = await s.store.retry_all(queue=form.get("queue") or None, task=form.get("task") or None)
    return redirect(request, _back(form), done="retried" if done else "retry-none", n=len(done))


async def forget_action(request: Request) -> Response:
    form = await checked_form(request)
    async with _dashboard(request).session() as s:
        done = await s.store.forget(form.get("job_id", ""))
    return redirect(request, _back(form), done="forgotten", n=int(done))


async def pause_action(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["queue"]
    async with _dashboard(request).session() as s:
        await queues.pause(s.redis, keys.queue_name(name))
    return redirect(request, "/", done="paused", q=name)


async def resume_action(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["queue"]
    async with _dashboard(request).session() as s:
        was_paused = await queues.resume(s.redis, keys.queue_name(name))
    return redirect(request, "/", done="resumed" if was_paused else "not-paused", q=name)


def _back(form: dict[str, str]) -> str:
    """Where an action returns: the page it was sent from, if that is a page of this dashboard."""
    back = form.get("back", "/")
    return back if back.startswith("/") and not back.startswith("//") else "/"


def _state(value: str | None) -> listing.State:
    try:
        return listing.State((value or "queued").replace("-", "_"))  # old links spelt in-progress
    except ValueError:
        return listing.State.queued


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 12 else 0


def _quote(value: str) -> str:
    return quote(value, safe="")


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _dashboard(request).page(request, "error.html", 403, title="Refused", message=str(exc))


async def _redis_down(request: Request, exc: Exception) -> Response:
    return _dashboard(request).page(
        request, "error.html", 503, title="Redis is unavailable", message=str(exc)
    )


async def _redis_error(request: Request, exc: Exception) -> Response:
    log.warning("dashboard_redis_error: %s", exc)
    message = f"Redis answered with an error ({exc}); a key may hold a value of the wrong type."
    return _dashboard(request).page(request, "error.html", 502, title="Redis error", message=message)


def create_app(read_only: bool = False, *, settings: Settings | None = None) -> Starlette:
    """The dashboard as an ASGI app: mount it in your app (``app.mount("/queues", create_app())``, behind your
    app's auth) or serve it alone with ``scalr-queue dashboard``.

    ``read_only`` hides the actions (retry, forget, pause, resume) and refuses them if posted anyway.
    ``settings`` defaults to the process settings (``REDIS_URL``, ``SCALR_QUEUE_*``).
    """
    routes = [
        Route("/", overview_page, name="overview"),
        Route("/queues/{queue}", queue_page, name="queue"),
        Route("/queues/{queue}/pause", pause_action, methods=["POST"]),
        Route("/queues/{queue}/resume", resume_action, methods=["POST"]),
        Route("/failed", failed_page, name="failed"),
        Route("/failed/retry", retry_action, methods=["POST"]),
        Route("/failed/retry-all", retry_all_action, methods=["POST"]),
        Route("/failed/forget", forget_action, methods=["POST"]),
        Route("/jobs/{job_id:path}", job_page, name="job"),
        Route("/search", search),
        Route("/workers", workers_page, name="workers"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ForbiddenError: _forbidden,
            RedisUnavailableError: _redis_down,
            ResponseError: _redis_error,
        },
    )
    app.state.dashboard = Dashboard(settings, read_only)
    app.state.read_only = read_only
    return app
