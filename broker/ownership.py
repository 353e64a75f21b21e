"""One broker per data directory and per listening address, unless sharing is asked for.

grpc turns ``SO_REUSEPORT`` on by default, so a second ``pta-broker serve`` on a port already
served started without a word and the kernel split connections between the two (seen: 3 of 8
sign-ins reached the broker without agents). And two brokers on one data directory would both
write its store and its certificates. Both are refused at start with a message that says which.

A data directory is one broker: its id (:func:`broker_id`), kept there, names it in a store
several brokers share.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import socket
from typing import TYPE_CHECKING

from pta.config import parse_endpoint

if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO

LOCK_FILE = "broker.lock"
ID_FILE = "broker.id"


class CannotStart(Exception):
    """The broker must not start: ``message`` says why, in one line, for the operator."""

    def __init__(self, message: str) -> None:
        """Keep the message."""
        super().__init__(message)
        self.message = message


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold the data directory for this process until the returned file is closed.

    An advisory ``flock``: released by the kernel when the process ends, however it ends, so a
    crashed broker never leaves a stale lock behind.

    Raises:
        CannotStart: When another process holds it (its pid is named when known).
    """
    path = data_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise CannotStart(
            f"another broker{who} serves the data dir {data_dir}: stop it, or give this one "
            "its own --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def broker_id(data_dir: Path) -> str:
    """This broker's id: made at its first start, kept in its data dir, the same after restarts.

    What it reports to a shared store (its streams, its status) is filed under it, so a
    restarted broker replaces its own reports rather than adding to them.
    """
    path = data_dir / ID_FILE
    if not path.exists():
        path.write_text(f"broker-{secrets.token_hex(6)}\n")
    return path.read_text().strip()


def check_free(address: str, *, flag: str) -> None:
    """Refuse an address something already listens on (``port 0`` is always free).

    grpc would report the same in a line of its own C logging and an exception; this says it
    first, in words, and names the flag that chose the address.

    Raises:
        CannotStart: When the address is in use, or not one of this machine's.
    """
    host, port = parse_endpoint(address)
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
        # Binds over a closed connection's TIME_WAIT (a broker just restarted), never over a
        # socket that listens.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise CannotStart(
                    f"{flag} {address}: the address is in use (another broker, or another "
                    "program, listens there); pick a free port or stop the other"
                ) from None
            raise CannotStart(f"{flag} {address}: cannot listen there ({error.strerror})") from None
