"""One command, one round trip: the enqueue hot path's own few connections.

A single ``enqueue`` is one EVALSHA. Through redis-py's ``Redis`` client most of its cost is not Redis: the pool's
checkout reads the socket for stray data (one more loop turn per call), then the retry wrapper, the script
object and the argument encoder each take their share; together more than the round trip itself. The lane
keeps a few connections from the same pool settings, sends a command already packed in Redis's protocol
(RESP) and reads the reply: the connection's own public ``send_packed_command``/``read_response``, nothing else.

A call given a deadline is bounded without a timer of its own (``asyncio.timeout`` costs a timer handle, a
heap entry and a cancellation check per call): one watchdog timer per lane, set for the earliest deadline of the
calls in flight, closes the connection of a call past its deadline, which ends its read at once; the call then
raises ``TimeoutError`` (it may have reached Redis). Closing, not cancelling: a read always ends when its socket
closes, while a cancellation can be swallowed on its way (CPython gh-86296).

It never decides an outcome on its own. Whenever it cannot simply answer (all its connections busy, the script
not loaded yet, a lost connection, a read-only replica), it says so and the caller takes the ordinary client
path, with its retries and script loading. A connection that failed in any other way than a Redis error
reply is dropped, never reused: it cannot hold a half-read reply for the next caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, ReadOnlyError, ResponseError

LANE_SIZE = 4  # connections: one-at-a-time callers need one; a burst of concurrent calls uses the pool too

NOT_ANSWERED: Any = object()  # the lane did not answer: take the ordinary path


def encoded(value: str | bytes | int | float) -> bytes:
    """An argument as redis-py encodes it: text as UTF-8, numbers as written."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    return repr(value).encode()


def packed(*values: str | bytes | int | float) -> bytes:
    """A command in RESP."""
    return b"*%d\r\n%b" % (len(values), arguments(*values))


def arguments(*values: str | bytes | int | float) -> bytes:
    """Arguments of a command in RESP, without the command's count line (for a command packed in parts)."""
    parts = []
    for value in values:
        data = encoded(value)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


SLOT: Any = object()  # an argument of a template filled at each call


def template(*values: str | bytes | int | float) -> bytes:
    """A command packed once but for its ``SLOT`` arguments: a ``%`` format taking each one's length and bytes.

    One ``%`` per call then packs it: the enqueue lane's command has twenty-nine arguments, nine of them its own."""
    parts = [b"*%d\r\n" % len(values)]
    for value in values:
        if value is SLOT:
            parts.append(b"$%d\r\n%b\r\n")
        else:
            data = encoded(value)
            parts.append((b"$%d\r\n%b\r\n" % (len(data), data)).replace(b"%", b"%%"))
    return b"".join(parts)


class Lane:
    """Up to ``size`` connections made by ``pool`` (so with its address, credentials, TLS and database)."""

    def __init__(self, pool: ConnectionPool, size: int = LANE_SIZE) -> None:
        self._pool = pool
        self._size = size
        self._idle: list[AbstractConnection] = []
        self._open: set[AbstractConnection] = set()
        self._deadlines: dict[AbstractConnection, float] = {}  # calls in flight with a deadline (loop time)
        # closed by the watchdog; their calls raise TimeoutError
        self._expired: set[AbstractConnection] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Future[None]] = set()

    async def call(self, packed: bytes, deadline: float | None = None, replies: int = 1) -> Any:
        """Redis's reply to ``packed``, or ``NOT_ANSWERED``. A Redis error reply (out of memory, no permission,
        wrong type) raises as it would through the client; past ``deadline`` (the loop's clock), TimeoutError.
        ``packed`` may hold several commands (a MULTI ... EXEC): all ``replies`` are read, the last returned, the
        first error raised."""
        if self._idle:
            connection = self._idle.pop()
        elif len(self._open) < self._size:
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            self._open.add(connection)
        else:
            return NOT_ANSWERED
        if deadline is not None:
            self._deadlines[connection] = deadline
            if self._watchdog is None or deadline < self._watchdog.when():
                self._watch(deadline)
        try:
            if not connection.is_connected:
                await connection.connect()  # type: ignore[no-untyped-call]
                if connection in self._expired:  # the deadline passed while connecting: nothing was sent
                    raise ConnectionError("no connection to Redis within the deadline")
            await connection.send_packed_command(packed, check_health=False)
            reply = await (connection.read_response() if replies == 1 else _read_all(connection, replies))
        except (NoScriptError, ReadOnlyError):
            reply = NOT_ANSWERED  # the ordinary path loads the script / finds the primary
        except ResponseError as error:
            reply = error  # the reply was read: the connection is in step
        except Exception:
            await self._drop(connection)
            if self._lapsed(connection):
                raise TimeoutError("no reply from Redis within the deadline") from None
            return NOT_ANSWERED  # lost or timed out: the ordinary path retries, as it would have
        except BaseException:
            self._lapsed(connection)
            await self._drop(connection)
            raise
        finally:
            if deadline is not None:
                del self._deadlines[connection]
        # a connection the watchdog closed as its reply came is whole, but not reused
        if not self._lapsed(connection):
            self._idle.append(connection)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _lapsed(self, connection: AbstractConnection) -> bool:
        """Whether the watchdog closed ``connection`` (which is then forgotten)."""
        if connection in self._expired:
            self._expired.discard(connection)
            return True
        return False

    def _watch(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """Close the connections of the calls past their deadline; watch again for the next deadline."""
        self._watchdog = None
        now = asyncio.get_running_loop().time()
        for connection, deadline in self._deadlines.items():
            if deadline <= now and connection not in self._expired:
                self._expired.add(connection)
                # its reader sees the socket close at once; a reply in flight is lost with it
                closing = asyncio.ensure_future(self._drop(connection))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        waiting = [
            deadline for connection, deadline in self._deadlines.items() if connection not in self._expired
        ]
        if waiting:
            self._watch(min(waiting))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for connection in list(self._open):
            await self._drop(connection)

    async def _drop(self, connection: AbstractConnection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)


async def _read_all(connection: AbstractConnection, replies: int) -> Any:
    """The last of ``replies`` replies; every one is read (the connection stays in step), the first error raised,
    one inside EXEC's reply too (a command that failed as it ran: the others ran)."""
    error: ResponseError | None = None
    reply = None
    for _ in range(replies):
        try:
            reply = await connection.read_response()
        except ResponseError as exc:
            error = error or exc
    if error is None and isinstance(reply, list):
        error = next((item for item in reply if isinstance(item, ResponseError)), None)
    if error is not None:
        raise error
    return reply


async def run_script(lane: Lane | None, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """``script(keys, args)``: through the lane when it answers, else through the client (which loads it)."""
    if lane is not None:
        reply = await lane.call(packed("EVALSHA", script.sha, len(keys), *keys, *args))
        if reply is not NOT_ANSWERED:
            return reply
    return await script(keys=keys, args=args)


def lane_for(redis: Any) -> Lane | None:
    """A lane on ``redis``'s pool; none for Sentinel's, which checks the primary at each checkout."""
    pool = redis.connection_pool
    return None if isinstance(pool, SentinelConnectionPool) else Lane(pool)
