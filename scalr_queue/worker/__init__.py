"""The worker: ``python -m scalr_queue.worker src.worker`` runs the module's ``tasks = [...]`` with good defaults.

``build_settings`` makes the same worker runnable under plain ``python -m arq``; ``run``/``serve`` run it in
this process (tests, embedding).
"""

from ._run import run, serve, watch
from ._settings import build_settings, settings_for_module

__all__ = ["build_settings", "run", "serve", "settings_for_module", "watch"]
