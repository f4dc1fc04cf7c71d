"""``python -m scalr_queue.cli._main ARGS``: the ``scalr-queue`` console script, for environments without it."""

from . import main

main()
