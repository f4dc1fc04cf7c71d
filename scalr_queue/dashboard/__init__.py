"""The dashboard: queues, jobs by state, one job, the failed store, workers, pause and resume, in server-rendered
HTML that works without JavaScript and loads nothing from outside the package.

    from scalr_queue.dashboard import create_app

    app.mount("/queues", create_app())           # behind your app's own auth
    app.mount("/queues", create_app(read_only=True))

``scalr-queue dashboard`` serves it alone, with basic auth. It needs the ``dashboard`` extra
(``pip install 'scalr_queue[dashboard]'``): Jinja2 and Starlette.
"""

from __future__ import annotations

from ..exceptions import MissingExtraError

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise MissingExtraError(f"the dashboard needs {exc.name}: pip install 'scalr_queue[dashboard]'") from exc

from ._app import create_app

__all__ = ["create_app"]
