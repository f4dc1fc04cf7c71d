"""`make demo` runs start to finish and shows what it promises; `make dev` serves until stopped."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import httpx

from tests.conftest import ROOT, WorkerProcess, run_command


def test_demo_runs_the_template_app_and_shows_jobs_finishing() -> None:
    """The demo starts Redis, the template's worker and backend, sends invoices over HTTP, shows each job's path,
    a failing job retried and then listed by `scalr-queue failed list`, and exits 0."""
    started = time.monotonic()
    result = run_command(sys.executable, "scripts/demo.py", timeout=90)
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert took < 60, out
    assert re.search(r"POST /invoices/1/send → 200 \{'job_id': '\w+'\}", out), out
    assert re.search(
        r"invoice 1: job \w+ (\w+ → )*complete: \{'invoice_id': 1, 'sent_to': 'customer-1@example.com'\}", out
    ), out
    assert re.search(r"invoice 13: job \w+ .*deferred.* → failed: \{'type': 'ConnectionError'", out), out
    assert re.search(r"worker │ .*job_retrying .*try=1", out), out
    assert re.search(r"worker │ .*job_failed .*reason=raised .*try=3", out), out
    assert re.search(r"demo │ \w{32}\s+send_invoice_email\s+\S+\s+raised\s+3\s", out), out  # failed list
    assert "worker exited with code 0" in out, out


def test_dev_stack_serves_until_interrupted() -> None:
    """`make dev` brings up the same stack (reload and watch on), serves jobs, and stops cleanly on Ctrl-C."""
    dev = WorkerProcess([sys.executable, "scripts/dev.py"], env=dict(os.environ), cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert time.monotonic() < deadline, dev.output
            url = next(
                (m.group(1) for line in dev.lines if (m := re.search(r"backend on (http://\S+)", line))), None
            )
            time.sleep(0.05)
        job_id = None
        while job_id is None:
            assert time.monotonic() < deadline, dev.output
            try:
                ready = httpx.get(f"{url}/health/ready")
                if ready.status_code == 200 and ready.json()["workers"] >= 1:
                    job_id = httpx.post(f"{url}/invoices/5/send").json()["job_id"]
            except httpx.TransportError:
                time.sleep(0.1)
        while httpx.get(f"{url}/jobs/{job_id}").json()["status"] != "complete":
            assert time.monotonic() < deadline, dev.output
            time.sleep(0.05)
        dev.signal(signal.SIGINT)
        assert dev.wait(timeout=40) == 0, dev.output
        assert any("--reload" in line for line in dev.lines)
        assert any("--watch" in line for line in dev.lines)
    finally:
        dev.stop()
