"""A real Prometheus server scrapes the queue exporter and a worker process; its HTTP API returns the values."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scalr_queue import enqueue
from scalr_queue.testing import free_port
from tests.conftest import WorkerProcess
from tests.test_deploy import RULES, tool

SCRAPE_INTERVAL = "1s"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], str]]:
    """Start ``prometheus`` scraping the given targets (job name -> port) every second; returns its base URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> str:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
        log.close()
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]


def wait_for_value(base: str, query: str, wanted: float, log: Path, timeout: float = 60) -> None:
    """Poll Prometheus's query API until ``query`` returns ``wanted`` (one series)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = api(base, "query", query=query)["result"]
        except OSError:
            last = "prometheus not answering yet"
        else:
            if len(last) == 1 and float(last[0]["value"][1]) == wanted:
                return
        time.sleep(0.25)
    raise AssertionError(f"{query} never returned {wanted}; last: {last}\n{log.read_text()[-3000:]}")


async def test_prometheus_scrapes_exporter_and_worker(
    queue: str,
    spawn: Callable[..., WorkerProcess],
    prometheus: Callable[[dict[str, int]], str],
    tmp_path: Path,
) -> None:
    """Prometheus reads the exporter's queue gauges and the worker's job counters, and evaluates the alert rules."""
    worker_port, exporter_port = free_port(), free_port()
    spawn("tests.apps.dashboard", env={"SCALR_QUEUE_METRICS_PORT": str(worker_port)}).wait_started()
    spawn("metrics", "--host", "127.0.0.1", "--port", str(exporter_port), module="scalr_queue.cli._main")
    for i in range(3):
        await enqueue("add", x=i, y=0, _defer_by=3600)
    done = [await enqueue("add", x=i, y=1) for i in range(2)]
    for job in done:
        assert job is not None
        await job.result(timeout=10)
    base = prometheus({"scalr-queue-exporter": exporter_port, "worker": worker_port})
    log = tmp_path / "prometheus.log"
    wait_for_value(base, 'up{job="scalr-queue-exporter"}', 1, log)
    wait_for_value(base, 'up{job="worker"}', 1, log)
    wait_for_value(base, f'scalr_queue_queue_deferred_jobs{{queue="{queue}"}}', 3, log)
    wait_for_value(base, f'scalr_queue_queue_ready_jobs{{queue="{queue}"}}', 0, log)
    wait_for_value(base, f'scalr_queue_workers{{queue="{queue}"}}', 1, log)
    wait_for_value(base, f'sum(scalr_queue_jobs_total{{queue="{queue}", outcome="succeeded"}})', 2, log)
    wait_for_value(
        base, f'sum(scalr_queue_job_duration_seconds_count{{queue="{queue}", task="add"}})', 2, log
    )
    rules = [rule for group in api(base, "rules")["groups"] for rule in group["rules"]]
    assert len(rules) == 6
    deadline = time.monotonic() + 30
    while any(rule.get("health") != "ok" for rule in rules) and time.monotonic() < deadline:
        time.sleep(0.5)
        rules = [rule for group in api(base, "rules")["groups"] for rule in group["rules"]]
    assert all(rule["health"] == "ok" for rule in rules), rules
