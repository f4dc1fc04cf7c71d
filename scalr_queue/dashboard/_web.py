"""Request plumbing shared by the pages: templates, the CSRF token, form bodies, redirects, time formatting.

CSRF: a random token lives in a ``SameSite=Strict`` cookie and in every form; a POST must carry both, equal, and,
when the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``), come from this same site.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from ..exceptions import ScalrQueueError
from ._records import as_json

CSRF_COOKIE = "scalr_queue_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64 * 1024


class ForbiddenError(ScalrQueueError, PermissionError):
    """A POST the dashboard refuses: read-only mode, or a missing or wrong CSRF token."""


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("scalr_queue.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        ago=ago,
        duration=duration,
        number=number,
        q=lambda v: quote(str(v), safe=""),
        tojson_pretty=as_json,
    )
    env.globals["qs"] = query_string
    return env


def query_string(**params: Any) -> str:
    """``?a=1&b=2`` from the parameters that have a value (empty when none has)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"?{query}" if query else ""


def here(request: Request) -> str:
    """This page, relative to the dashboard, without the notice of a previous action: where actions return."""
    path = str(request.scope.get("path", "/"))
    root = base_path(request)
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("done", "n", "q")]
    return path + (f"?{urlencode(kept)}" if kept else "")


def base_path(request: Request) -> str:
    """Where the dashboard is mounted (``/queues`` under a host app, empty when it serves alone)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then the response must set the cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


def render(
    request: Request, env: Environment, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    token, new = csrf_token(request)
    state = request.app.state
    html = env.get_template(template).render(
        base=base_path(request),
        read_only=state.read_only,
        csrf=token,
        csrf_field=CSRF_FIELD,
        here=here(request),
        now_ms=time.time() * 1000,
        notice=_notice(request),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    if new:
        response.set_cookie(
            CSRF_COOKIE, token, path=base_path(request) or "/", httponly=True, samesite="strict"
        )
    return response


async def checked_form(request: Request) -> dict[str, str]:
    """The POSTed form, once the request passed the read-only and CSRF checks; ForbiddenError otherwise."""
    if request.app.state.read_only:
        raise ForbiddenError("this dashboard is read-only: actions are refused")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ForbiddenError("the form is too large")
    fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = fields.get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise ForbiddenError("the form's CSRF token is missing or stale: reload the page and try again")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise ForbiddenError("a request from another site is refused")
    origin = request.headers.get("origin")
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    if origin and origin != "null" and urlsplit(origin).netloc not in hosts:
        raise ForbiddenError("a request from another origin is refused")
    return fields


def redirect(request: Request, path: str, **params: str | int | None) -> RedirectResponse:
    """A 303 to a page of this dashboard, with a notice for the next page to show."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return RedirectResponse(f"{base_path(request)}{path}{'?' + query if query else ''}", status_code=303)


NOTICES = {
    "retried": "Queued {n} failed job(s) again.",
    "retry-none": "Nothing was queued again: no matching record, or the job is queued or running again already.",
    "forgotten": "Forgot {n} failure record(s).",
    "paused": "Paused queue {q}: its workers take no new jobs.",
    "resumed": "Resumed queue {q}.",
    "not-paused": "Queue {q} was not paused.",
}


def _notice(request: Request) -> str | None:
    code = request.query_params.get("done")
    if code not in NOTICES:
        return None
    n = request.query_params.get("n", "0")
    return NOTICES[code].format(n=n if n.isdigit() else "0", q=request.query_params.get("q", "")[:200])


def when(ms: float | None) -> str:
    """A moment as UTC text, to the second."""
    if ms is None:
        return "–"
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "–"


def ago(ms: float | None) -> str:
    """How long ago (or, for a future moment, how soon) a moment is, in words an operator scans quickly."""
    if ms is None:
        return "–"
    delta = time.time() - ms / 1000
    text = duration(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"
