"""What an idle agent stream costs, at the broker and at the agent: memory, and CPU a minute.

``python -m tooling.idle_cost [--agents 4] [--seconds 60]``: the real programs on a private
PostgreSQL and slapd, measured from ``/proc`` (resident memory, CPU time of user and system),
in four phases with nothing signing in:

0. one broker of the cluster, no agent: the broker's own idle cost (its ticks, its heartbeat);
1. ``--agents`` agents attached to it, one stream each;
2. as many again: the broker's cost per stream is the difference between phases 2 and 1 over
   the agents added (what any stream at all costs once, e.g. the tick's query of the live
   streams' certificates, is the rest of phase 1's difference);
3. two more brokers join, so each agent holds three streams: the agent's cost per stream is
   its difference between phases 3 and 2 over the two it added.

Memory is read at the end of each phase; a stream's memory is what its process grew by.
Prints one table; not a test (the numbers depend on the machine), quoted in
``docs/scale-out.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tooling.localrun import LocalDeployment, wait_until
from tooling.postgres import Postgres
from tooling.slapd import DirectoryUser, Slapd

if TYPE_CHECKING:
    from collections.abc import Callable

TENANT, DOMAIN = "idle", "idle.example"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15


def rss_mib(pid: int) -> float:
    """A process's resident memory now, in MiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """Let everything idle for ``seconds``: per process, (CPU seconds a minute, RSS MiB)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {
        name: ((cpu_seconds(pid) - before[name]) * 60 / seconds, rss_mib(pid))
        for name, pid in pids.items()
    }


def _run_agent(demo: LocalDeployment, name: str, slapd: Slapd) -> None:
    demo.enrol_agent(name, TENANT)
    demo.run_agent(name, slapd)


def _all_at(demo: LocalDeployment, broker: str, agents: int) -> bool:
    """Whether ``broker`` holds a stream of every agent (its log: welcomed, not ended)."""
    log = demo.workdir / f"{broker}.log"
    text = log.read_text() if log.exists() else ""
    return text.count('"agent.connected"') - text.count('"agent.disconnected"') >= agents


def measure(agents: int, seconds: float, out: Callable[[str], None]) -> None:
    """Run the three phases and print what each stream costs (see the module)."""
    workdir = Path(tempfile.mkdtemp(prefix="pta-idle-"))
    users = [DirectoryUser(uid="alice", password=secrets.token_urlsafe(12))]  # Nobody signs in.
    with (
        Slapd(users=users) as slapd,
        Postgres() as postgres,
        LocalDeployment(workdir) as demo,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        demo.start_broker(store_url=postgres.url, name="broker-1")
        demo.broker_cli("tenant", "add", TENANT, "--domain", DOMAIN)
        pid = demo.processes["broker-1"].pid
        time.sleep(2)  # Past its start.
        alone = idle({"broker-1": pid}, seconds)["broker-1"]

        names = [f"agent-{n}" for n in range(1, 2 * agents + 1)]
        for name in names[:agents]:
            _run_agent(demo, name, slapd)
        time.sleep(2)
        some = idle({"broker-1": pid}, seconds)["broker-1"]
        for name in names[agents:]:
            _run_agent(demo, name, slapd)
        agent_pids = {name: demo.processes[name].pid for name in names}
        time.sleep(2)
        one = idle({"broker-1": pid, **agent_pids}, seconds)

        for joining in ("broker-2", "broker-3"):
            demo.start_broker(store_url=postgres.url, name=joining)
        for joining in ("broker-2", "broker-3"):
            wait_until(
                functools.partial(_all_at, demo, joining, len(names)), f"the agents at {joining}"
            )
        time.sleep(2)
        three = idle(agent_pids, seconds)

    per_broker_cpu = (one["broker-1"][0] - some[0]) / agents
    per_broker_rss = (one["broker-1"][1] - some[1]) / agents
    per_agent_cpu = sum(three[n][0] - one[n][0] for n in names) / len(names) / 2
    per_agent_rss = sum(three[n][1] - one[n][1] for n in names) / len(names) / 2
    out(f"idle {seconds:g} s a phase; CPU in ms a minute, memory in MiB")
    for label, (cpu, rss) in (
        ("broker alone", alone),
        (f"broker with {agents} streams", some),
        (f"broker with {len(names)} streams", one["broker-1"]),
    ):
        out(f"{label:<26} CPU {cpu * 1000:7.1f}   RSS {rss:6.1f}")
    for name in names:
        out(
            f"{name}: 1 stream CPU {one[name][0] * 1000:7.1f} RSS {one[name][1]:6.1f};"
            f" 3 streams CPU {three[name][0] * 1000:7.1f} RSS {three[name][1]:6.1f}"
        )
    for where, cpu, rss in (
        ("broker", per_broker_cpu, per_broker_rss),
        ("agent ", per_agent_cpu, per_agent_rss),
    ):
        out(f"per idle stream at the {where}: CPU {cpu * 1000:6.1f} ms/min, {rss * 1024:6.0f} KiB")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tooling.idle_cost", description=__doc__)
    parser.add_argument("--agents", type=int, default=4, help="agents (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="each phase (default 60)")
    args = parser.parse_args(argv)
    measure(args.agents, args.seconds, _say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
