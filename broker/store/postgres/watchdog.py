"""A call that overstays its time loses its connection: a frozen server cannot hang a broker.

libpq has no client-side timeout for a statement, and the server-side ``statement_timeout``
is enforced by the server itself: a PostgreSQL that is frozen (stopped by a signal, a VM
paused, a network that drops packets without a reset) accepts the request into its socket
buffer and never answers, and a synchronous call waits forever, holding the broker's event
loop. So each call registers its connection here with a deadline, and one thread shuts down
the socket of any call still running at its deadline: the blocked read returns at once, psycopg
raises ``OperationalError``, and the caller answers UNAVAILABLE. Registration is a dict write
under a lock; the thread sleeps until the earliest deadline, and is woken only by a call due
before that (waking it for every call cost the broker 5-10 % of its CPU on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

#: How often the thread looks when nothing is registered (it is woken for a new deadline).
IDLE_WAIT = 1.0


class Watchdog:
    """Cuts the connections of calls past their deadline."""

    def __init__(self) -> None:
        """Start with nothing watched; the thread starts with the first call."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        #: call token -> (monotonic deadline, the connection's socket fd).
        self._calls: dict[int, tuple[float, int]] = {}
        self._tokens = iter(range(1 << 62))
        self._thread: threading.Thread | None = None
        #: Until when the thread sleeps: a later deadline need not wake it.
        self._sleeps_until = 0.0
        #: How many calls it cut (for tests and logs).
        self.cut = 0

    @contextlib.contextmanager
    def watch(self, fileno: int, timeout: float) -> Iterator[None]:
        """Cut the socket ``fileno`` if the body is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            token = next(self._tokens)
            self._calls[token] = (deadline, fileno)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pta-store-watchdog", daemon=True
                )
                self._thread.start()
            if deadline < self._sleeps_until:  # Every call's timeout is the same: rarely.
                self._wake.notify()
        try:
            yield
        finally:
            with self._lock:  # Once out, the socket may close and its number be reused.
                self._calls.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for token, (deadline, fileno) in list(self._calls.items()):
                    if deadline <= now:
                        del self._calls[token]
                        _shut(fileno)
                        self.cut += 1
                earliest = min((d for d, _ in self._calls.values()), default=now + IDLE_WAIT)
                self._sleeps_until = earliest
                self._wake.wait(max(0.0, earliest - now))


def _shut(fileno: int) -> None:
    """Shut the socket down (both ways) through a duplicate of its descriptor."""
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fileno))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()
