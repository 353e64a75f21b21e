"""An agent's health report, as the broker keeps it: bounded, and as JSON for the store.

The agent sends :class:`~pta.v1.agent_pb2.Health` on its stream every few seconds when it
changed; the broker keeps the latest on the stream's connection, and reports it with the
stream every second (``ConnectionStatus.health``), so that ``agents list`` and the
AdminService's ``ListAgents`` show it from any broker. The agent is trusted to say how it is
doing, not to fill the store or to write on operators' terminals: servers, strings (printable
characters only: no newline or escape sequence reaches ``agents list``) and numbers are
bounded here.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pta.v1 import agent_pb2

#: Reports closer together than this are ignored (the agent sends one every 5 s at most).
MIN_INTERVAL = 1.0
#: Servers kept from one report (an agent configures a handful).
MAX_SERVERS = 32
MAX_SERVER = 200
MAX_ERROR = 200
#: No count or duration beyond this is believed (about 31,000 years of seconds).
MAX_NUMBER = 1e12


def _text(value: str, limit: int) -> str:
    """Printable characters only (it reaches operators' terminals), cut to ``limit``."""
    return "".join(ch for ch in value[: limit * 4] if ch.isprintable())[:limit]


def _number(value: float) -> float:
    return min(max(value, 0.0), MAX_NUMBER) if math.isfinite(value) else 0.0


def accepted(report: agent_pb2.Health) -> str:
    """The report as the store keeps it: JSON of bounded values, one line."""
    kept: dict[str, Any] = {
        "started_at": _number(report.started_at),
        **{
            name: min(getattr(report, name), int(MAX_NUMBER))
            for name in ("handled", "succeeded", "failed", "errors")
        },
        "servers": [
            {
                "server": _text(s.server, MAX_SERVER),
                "reachable": s.reachable,
                "last_error": _text(s.last_error, MAX_ERROR),
                "last_error_at": _number(s.last_error_at),
                "median_bind_ms": round(_number(s.median_bind_ms), 3),
                "binds": min(s.binds, int(MAX_NUMBER)),
            }
            for s in report.servers[:MAX_SERVERS]
        ],
    }
    return json.dumps(kept, separators=(",", ":"))
