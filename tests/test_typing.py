"""Typed task handles: mypy checks ``await t.enqueue(...)`` against the task's signature (without ``ctx``) and
types ``await job.result()`` as the task's return type. Runs mypy on tests/typing/good.py and bad.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "typing"
MARK = re.compile(r"#\s*E:\s*(.+)$")


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.timeout(300)
def test_good_example_passes_mypy_strict() -> None:
    """Typed handles as users write them: no error."""
    result = mypy(HERE / "good.py")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_bad_example_reports_the_expected_errors() -> None:
    """Each marked line reports its error (a wrong type, a misspelt or missing argument, a wrong result type);
    unmarked lines report none."""
    path = HERE / "bad.py"
    result = mypy(path)
    assert result.returncode == 1, result.stdout + result.stderr
    expected = {
        number: match.group(1).strip()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (match := MARK.search(line))
    }
    reported: dict[int, list[str]] = {}
    for line in result.stdout.splitlines():
        found = re.match(rf".*{re.escape(path.name)}:(\d+): error: (.+)$", line)
        if found:
            reported.setdefault(int(found.group(1)), []).append(found.group(2))
    assert set(reported) == set(expected), result.stdout
    for number, fragment in expected.items():
        assert any(fragment in message for message in reported[number]), (number, fragment, result.stdout)
