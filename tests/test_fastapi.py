"""scalr_queue.fastapi in-process: the lifespan (composed with the app's), the dependency, 503s, readiness."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from scalr_queue import enqueue
from scalr_queue.client import Client
from scalr_queue.config import reset_settings
from scalr_queue.fastapi import ClientDep, health_router, install_error_handler, lifespan
from scalr_queue.testing import free_port


def make_app(*, require_worker: bool = False) -> tuple[FastAPI, list[str]]:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("own start")
        yield {"greeting": "hello"}
        events.append("own stop")

    app = FastAPI(lifespan=lifespan(own))
    install_error_handler(app)
    app.include_router(health_router(require_worker=require_worker))

    @app.post("/add")
    async def add(request: Request, client: ClientDep) -> dict[str, Any]:
        by_dependency = await client.enqueue("add", x=1, y=2)
        by_module = await enqueue("add", x=3, y=4)
        assert by_dependency is not None and by_module is not None
        return {
            "greeting": request.state.greeting,
            "jobs": [by_dependency.job_id, by_module.job_id],
            "same": isinstance(client, Client),
        }

    return app, events


def test_lifespan_composes_and_handlers_share_one_pool(redis_server: object) -> None:
    """The app's own lifespan runs inside ours and keeps its state; the dependency and enqueue use one pool."""
    app, events = make_app()
    with TestClient(app) as http:
        assert events == ["own start"]
        body = http.post("/add").json()
        assert body["greeting"] == "hello"
        assert len(body["jobs"]) == 2
        ready = http.get("/health/queue")
        assert ready.status_code == 200
        assert ready.json()["queued"] >= 2
    assert events == ["own start", "own stop"]


def test_readiness_can_require_a_live_worker(redis_server: object) -> None:
    """With require_worker, no live worker means 503."""
    app, _ = make_app(require_worker=True)
    with TestClient(app) as http:
        response = http.get("/health/queue")
        assert response.status_code == 503
        assert response.json()["workers"] == 0
        assert response.headers["Retry-After"] == "5"


def test_redis_down_gives_503_not_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up survives a Redis that is down; enqueue answers 503 + Retry-After; readiness answers 503."""
    monkeypatch.setenv("REDIS_URL", f"redis://:secret@127.0.0.1:{free_port()}/0")
    reset_settings()
    app, _ = make_app()
    with TestClient(app) as http:
        response = http.post("/add")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "secret" not in response.text
        assert http.get("/health/queue").status_code == 503


def test_plain_import_does_not_need_fastapi() -> None:
    """scalr_queue.fastapi is the only module that imports FastAPI."""
    code = "import sys, scalr_queue, scalr_queue.worker, scalr_queue.cli; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
