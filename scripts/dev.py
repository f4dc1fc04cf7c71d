"""`make dev`: the template app's stack, long-running, for development.

The backend reloads on code changes (uvicorn --reload) and the worker restarts with fresh code (--watch). Redis is a
throwaway local server. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import signal
import threading

from stack import LocalStack, say


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with LocalStack(dev=True) as stack:
        say(
            "dev",
            f"backend on {stack.url} (try: curl -X POST {stack.url}/invoices/1/send), Redis on {stack.redis.url}",
        )
        say("dev", "edit template-app/backend/src: the backend reloads and the worker restarts; Ctrl-C stops")
        stop.wait()


if __name__ == "__main__":
    main()
