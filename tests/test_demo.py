"""`make demo` runs start to finish and shows what it promises."""

from __future__ import annotations

import re
import sys

from tests.conftest import run_command


def test_demo_runs_and_shows_jobs_finishing() -> None:
    """The demo starts its own Redis and worker, shows each job's path and the probe, and exits 0."""
    result = run_command(sys.executable, "scripts/demo.py", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "add(x=2, y=3): job" in out, out
    assert re.search(r"add\(x=2, y=3\): job \w+ (\w+ → )*complete: result 5", out), out
    assert "failed: error ValueError: card declined" in out, out
    assert "JobTimeoutError" in out, out
    assert "healthy: 1 live worker(s)" in out, out
    assert "worker │" in out, out
