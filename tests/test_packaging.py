"""The package surface: the contract names, typed, and no heavy imports for web processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import scalr_queue


def test_contract_names_are_exported() -> None:
    """DESIGN §2 names are importable from the top level and listed in __all__."""
    for name in ("enqueue", "Job", "task", "Retry", "NonRetryableError", "close", "configure_logging"):
        assert name in scalr_queue.__all__
        assert getattr(scalr_queue, name) is not None
    assert all(hasattr(scalr_queue, name) for name in scalr_queue.__all__)


def test_import_does_not_pull_fastapi_or_click() -> None:
    """A web process importing scalr_queue loads neither fastapi nor click (nor the worker)."""
    code = (
        "import sys, scalr_queue; "
        "print(sorted(m for m in ('fastapi', 'click', 'scalr_queue.worker', 'scalr_queue.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_typed_package() -> None:
    """py.typed ships with the package."""
    assert (Path(scalr_queue.__file__).parent / "py.typed").exists()
