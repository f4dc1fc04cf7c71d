"""The worker: ``python -m scalr_queue.worker src.worker`` runs the module's ``tasks = [...]`` with good defaults.

``Worker`` takes arq ``Worker``'s keyword options; ``build_settings`` makes the same tasks runnable under plain
``python -m arq``; ``run``/``serve`` run a worker module in this process (tests, embedding).
"""

from ._engine import Worker
from ._run import run, serve, watch
from ._settings import build_settings, worker_options

__all__ = ["Worker", "build_settings", "run", "serve", "watch", "worker_options"]
