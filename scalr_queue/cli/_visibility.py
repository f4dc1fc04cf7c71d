"""``dashboard`` and ``metrics``: the dashboard served alone, and the queue-level Prometheus exporter."""

from __future__ import annotations

import ipaddress

import click

from ..config import get_settings
from ..exceptions import MissingExtraError
from ._common import CommandInputError, redis_url_option, user_errors

DASHBOARD_PORT = 8710
METRICS_PORT = 9808


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DASHBOARD_PORT, show_default=True)
@click.option("--read-only", is_flag=True, help="Hide and refuse the actions (retry, forget, pause, resume).")
@redis_url_option
@user_errors
def dashboard_command(*, host: str, port: int, read_only: bool) -> None:
    """Serve the dashboard alone, with basic auth (password: SCALR_QUEUE_DASHBOARD_PASSWORD, any user name).

    Without a password it only listens on a loopback address.
    """
    settings = get_settings()
    secret = settings.dashboard_password.get_secret_value() if settings.dashboard_password else ""
    if not secret and not is_loopback(host):
        raise CommandInputError(
            f"refusing to serve the dashboard on {host} without a password: set SCALR_QUEUE_DASHBOARD_PASSWORD, "
            "or listen on 127.0.0.1"
        )
    try:
        import uvicorn

        from ..dashboard import create_app
        from ..dashboard._auth import BasicAuth
    except ImportError as exc:
        raise MissingExtraError(
            f"the dashboard needs {exc.name}: pip install 'scalr_queue[dashboard]'"
        ) from None
    app = create_app(read_only)
    served = BasicAuth(app, secret) if secret else app
    mode = ", read-only" if read_only else ""
    auth = "basic auth" if secret else "no password: loopback only"
    click.echo(f"scalr_queue dashboard on http://{host}:{port}/ ({auth}{mode})", err=True)
    uvicorn.run(served, host=host, port=port, log_level="warning", access_log=False)


@click.command("metrics")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=METRICS_PORT, show_default=True)
@redis_url_option
@user_errors
def metrics_command(*, host: str, port: int) -> None:
    """Serve queue-level Prometheus gauges (ready, deferred, oldest ready age, in progress, failed, workers,
    paused) for every queue, read from Redis at each scrape. Run one per Redis."""
    from ..exporter import serve

    settings = get_settings()
    click.echo(f"scalr_queue metrics on http://{host}:{port}/metrics", err=True)
    serve(settings, host, port)
