"""``python -m scalr_queue.worker MODULE [--queue NAME] [--burst] [--check] [--watch DIR]``."""

from ..cli import run, worker_command

if __name__ == "__main__":
    run(worker_command, prog_name="python -m scalr_queue.worker")
