"""A worker told to stop exactly as one of its commands finishes sending: the worst timing, every time.

Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives in the loop iteration in which the call it
wraps completes (CPython gh-86296), and redis-py sends every command through ``wait_for``. arq stops its worker
with one ``cancel()`` of its main task; when that lands there, the stop is lost and the worker lives on, beating
its heartbeat. Once ``noop`` has armed the trap, the next BLPOP send completes and in that same iteration the
process gets SIGTERM and the sending task is cancelled; a worker built on arq's loop has its own single stop
cancel delivered the same way (arq's ``_wait_for_tasks_to_complete`` is re-pointed at the trap).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import arq.worker
from redis.asyncio.connection import Connection

_send = Connection.send_packed_command
_write = Connection._send_packed_command
ARMED = {"blpop": False, "any": False}
SENDER: dict[str, Any] = {"cancel": None}


async def _send_noting_sender(self: Connection, command: Any, check_health: bool = True) -> None:
    self._trap_sender = asyncio.current_task()  # type: ignore[attr-defined]  # per connection: the task sending on it
    await _send(self, command, check_health)


async def _write_then_stop(self: Connection, command: Any) -> None:
    await _write(self, command)
    loop = asyncio.get_running_loop()
    sender = getattr(self, "_trap_sender", None)
    if ARMED["blpop"] and any(b"BLPOP" in bytes(part)[:48] for part in command):
        ARMED["blpop"] = False
        signal.raise_signal(signal.SIGTERM)
        if sender is not None:
            loop.call_soon(sender.cancel)  # lands before wait_for resumes
    elif ARMED["any"] and SENDER["cancel"] is not None and sender is SENDER["cancel"]:
        ARMED["any"] = False
        loop.call_soon(sender.cancel)


async def _arq_stop_at_a_send(self: Any, signum: signal.Signals) -> None:
    """arq's stop for a worker on arq's loop: its single cancel of the main task, at a send's completion."""
    while any(not t.done() for t in self.tasks.values()):
        await asyncio.sleep(0.05)
    SENDER["cancel"] = self.main_task
    ARMED["any"] = True


Connection.send_packed_command = _send_noting_sender  # type: ignore[method-assign]
Connection._send_packed_command = _write_then_stop  # type: ignore[method-assign]
arq.worker.Worker._wait_for_tasks_to_complete = _arq_stop_at_a_send  # type: ignore[method-assign]


async def noop(ctx: dict) -> None:
    ARMED["blpop"] = True


tasks = [noop]
