"""A worker module with a repeating job: ``every(1, tick, name=...)`` (tests/test_every.py runs three of it)."""

from __future__ import annotations

from scalr_queue import every
from tests.apps.flow import mark, tick

tasks = [mark]
cron_jobs = [every(1, tick, _name="beat")]
