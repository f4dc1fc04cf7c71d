"""One command, one round trip: the enqueue hot path's own few connections.

A single ``enqueue`` is one EVALSHA. Through redis-py's ``Redis`` client most of its cost is not Redis: the pool's
checkout reads the socket for stray data (one more loop turn per call), then the retry wrapper, the script
object and the argument encoder each take their share; together more than the round trip itself. The lane
keeps a few connections from the same pool settings, sends a command already packed in Redis's protocol
(RESP) and reads the reply: the connection's own public ``send_packed_command``/``read_response``, nothing else.

It never decides an outcome on its own. Whenever it cannot simply answer (all its connections busy, the script
not loaded yet, a lost connection, a read-only replica), it says so and the caller takes the ordinary client
path, with its retries and script loading. A connection that failed in any other way than a Redis error
reply is dropped, never reused: it cannot hold a half-read reply for the next caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

LANE_SIZE = 4  # connections: one-at-a-time callers need one; a burst of concurrent calls uses the pool too

NOT_ANSWERED: Any = object()  # the lane did not answer: take the ordinary path


def packed(*values: str | bytes | int | float) -> bytes:
    """A command in RESP, its arguments encoded as redis-py encodes them (text as UTF-8, numbers as written)."""
    parts = []
    for value in values:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode()
        elif isinstance(value, int):
            data = b"%d" % value
        else:
            data = repr(value).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


class Lane:
    """Up to ``size`` connections made by ``pool`` (so with its address, credentials, TLS and database)."""

    def __init__(self, pool: ConnectionPool, size: int = LANE_SIZE) -> None:
        self._pool = pool
        self._size = size
        self._idle: list[AbstractConnection] = []
        self._open: set[AbstractConnection] = set()

    async def call(self, packed: bytes) -> Any:
        """Redis's reply to ``packed``, or ``NOT_ANSWERED``. A Redis error reply (out of memory, no permission,
        wrong type) raises as it would through the client."""
        if self._idle:
            connection = self._idle.pop()
        elif len(self._open) < self._size:
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            self._open.add(connection)
        else:
            return NOT_ANSWERED
        try:
            await connection.connect()  # type: ignore[no-untyped-call]  # at once when connected
            await connection.send_packed_command(packed, check_health=False)
            reply = await connection.read_response()
        except (NoScriptError, ReadOnlyError):
            self._idle.append(connection)  # the reply was read: the connection is in step
            return NOT_ANSWERED  # the ordinary path loads the script / finds the primary
        except ResponseError:
            self._idle.append(connection)
            raise
        except Exception:
            await self._drop(connection)
            return NOT_ANSWERED  # lost or timed out: the ordinary path retries, as it would have
        except BaseException:
            await self._drop(connection)
            raise
        self._idle.append(connection)
        return reply

    async def close(self) -> None:
        for connection in list(self._open):
            await self._drop(connection)

    async def _drop(self, connection: AbstractConnection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)


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
