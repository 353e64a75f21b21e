"""Parsing shared by the programs' configuration: durations and host:port endpoints."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Parse ``90``, ``1.5s``, ``250ms``, ``10m``, ``1h`` or ``2d`` into seconds.

    Raises:
        ValueError: When the text is not such a duration or is not positive.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 10m, 1h)")
    seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


def parse_endpoint(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too).

    Raises:
        ValueError: When there is no valid port.
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:  # noqa: PLR2004
        raise ValueError(f"not a host:port endpoint: {text!r}")
    return host, int(port)
