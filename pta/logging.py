"""The one structlog configuration: JSON in production, readable on a terminal, never a secret.

Only the programs' ``__main__`` modules call :func:`configure`; every other module just does
``log = structlog.get_logger()``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

import structlog

if TYPE_CHECKING:
    from structlog.typing import EventDict

REDACTED = "[redacted]"
#: Field names that must never reach a log line, whatever their value.
SECRET_FIELDS = frozenset(
    {
        "password",
        "new_password",
        "old_password",
        "secret",
        "token",
        "envelope",
        "credentials",
        "key",
        "private_key",
        "bind_password",
        "code",
        "totp",
    }
)
SECRET_SUFFIXES = ("_password", "_secret", "_token", "_key", "_envelope")


def _is_secret(field: str) -> bool:
    lowered = field.lower()
    return lowered in SECRET_FIELDS or lowered.endswith(SECRET_SUFFIXES)


def redact(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every secret-named field.

    A processor, not a convention: a field called ``password`` is dropped even when a future
    change passes one by mistake.
    """
    for field in event_dict:
        if _is_secret(field):
            event_dict[field] = REDACTED
    return event_dict


def configure(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog for a program.

    Args:
        level: The lowest level logged (``debug``, ``info``, ``warning``, ``error``).
        json: JSON lines if True, a readable console if False, by terminal if None.
        stream: Where log lines go; standard error by default, keeping stdout for output.
    """
    out = stream or sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            # Never a "pretty" traceback with local variables: a password may be one.
            exception_formatter=structlog.dev.plain_traceback,
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info if use_json else _keep,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def _keep(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Leave exceptions for the console renderer, which prints them readably."""
    return event_dict
