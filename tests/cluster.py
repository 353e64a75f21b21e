"""Several real brokers on one PostgreSQL database, as an operator runs a cluster.

The first broker claims the store for its CA; each other one starts with a copy of the first
one's ``ca.pem`` and ``ca.key`` in its data dir, as the README says to join. A broker started
again in its data dir (after a SIGKILL) listens where it did before, as a restarted service
on a fixed port would. What each broker holds is read from its own log, since its last start.
"""

from __future__ import annotations

import datetime
import json
import shutil
from typing import TYPE_CHECKING

from tests.support import BrokerProcess

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import AgentProcess

#: The events that say which streams a broker holds (and since when it serves).
_STREAM_EVENTS = ('"broker.serving"', '"agent.connected"', '"agent.disconnected"')


def at(event: dict[str, object]) -> float:
    """When a log event happened (its ISO timestamp), as Unix time."""
    return datetime.datetime.fromisoformat(str(event["timestamp"])).timestamp()


def start_cluster(run_dir: Path, names: list[str], url: str, *flags: str) -> list[BrokerProcess]:
    """Start a broker per name on the store at ``url``, the first one's CA in every data dir.

    Every broker gets ``flags``. Whatever started is stopped when one fails to start.
    """
    started: list[BrokerProcess] = []
    try:
        started.append(BrokerProcess.start(run_dir, names[0], *flags, store=url))
        started.extend(join(run_dir, name, started[0], *flags) for name in names[1:])
    except BaseException:
        for broker in started:
            broker.stop()
        raise
    return started


def join(run_dir: Path, name: str, first: BrokerProcess, *flags: str) -> BrokerProcess:
    """Start broker ``name`` in ``first``'s cluster (same store, its CA), and wait until it serves.

    A data dir that served before keeps its CA copy, and its endpoints: the broker listens
    where it did (clients and agents that knew it find it again).
    """
    data_dir = run_dir / name
    data_dir.mkdir(mode=0o700, exist_ok=True)
    for file in ("ca.pem", "ca.key"):
        if not (data_dir / file).exists():
            shutil.copy2(first.data_dir / file, data_dir / file)
    endpoints = data_dir / "endpoints.json"
    again: tuple[str, ...] = ()
    if endpoints.exists():
        before = json.loads(endpoints.read_text())
        again = ("--listen", before["public"], "--agent-listen", before["agent"])
    return BrokerProcess.start(run_dir, name, *flags, *again, store=first.store)


def streams(broker: BrokerProcess) -> dict[str, str]:
    """The streams ``broker`` holds since it last started: connection id -> agent id."""
    held: dict[str, str] = {}
    for line in broker.log_path.read_text().splitlines():
        if not any(event in line for event in _STREAM_EVENTS):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind, connection = event.get("event"), str(event.get("connection_id"))
        if kind == "broker.serving":
            held.clear()
        elif kind == "agent.connected":
            held[connection] = str(event.get("agent_id"))
        elif kind == "agent.disconnected":
            held.pop(connection, None)
    return held


def connected_at(broker: BrokerProcess, agent: AgentProcess) -> bool:
    """Whether ``broker`` holds a stream of ``agent`` (welcomed, not ended since)."""
    return agent.agent_id in streams(broker).values()
