"""``make bench``: end-to-end sign-ins against a direct LDAP bind, in one run.

It starts a throwaway slapd with N users, a broker and one or more agents (the real programs, as
processes), then measures, on the same machine in the same run:

1. the baseline: direct ldap3 binds against that slapd from one process, in slices of one
   phase's duration: one before the first end-to-end level and one after each level;
2. sign-ins through client -> broker -> agent -> slapd (mTLS, HPKE) at each concurrency, with
   one in five passwords wrong and every answer checked (a wrong answer fails the run), over
   each API: a unary ``SignIn`` call per sign-in, and ``SignInStream`` (one stream per load
   process, several sign-ins per message);
3. the CPU each process spent per sign-in (its own counters over the measured window).

``--store sqlite,postgresql`` measures a broker on each store in turn, beside the same
baselines; ``--brokers 1,2`` also measures PostgreSQL clusters of that many broker processes
(one store, every agent attached to each broker, each load process sending to one broker in
turn), so that what a second broker process on the same machine adds is measured too.

Ratios, not absolute numbers, are what carry from one machine to another. Each end-to-end phase
is compared with its adjacent baseline, the mean of the slices just before and just after its
level: this machine's speed moves by 2x within a run, and a baseline measured a minute earlier
says little about the machine a phase ran on. The spread of the slices says how much it moved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pta import logging as pta_logging
from tooling import echo
from tooling.bench_report import PhaseResult, report_of
from tooling.loadgen import (
    APIS,
    Case,
    LoadSpec,
    Sample,
    cases,
    direct_binds,
    echo_round_trips,
    end_to_end,
)
from tooling.localrun import LocalDeployment, wait_until
from tooling.postgres import Postgres
from tooling.slapd import DirectoryUser, Slapd, free_port

DOMAIN = "bench.example"
TICKS = os.sysconf("SC_CLK_TCK")
#: Wrong passwords would lock the benchmark's users: its directory has no lockout (nor has
#: its tenant at the broker, below).
NO_LOCKOUT = {"pwdLockout": "FALSE", "pwdMaxFailure": "0"}
SETTLE = 1.5  # seconds between starting a phase and its measured window
PHASE_NAMES = {"unary": "end to end", "stream": "end to end stream"}
BASELINE_NAME = "direct ldap3 bind"
#: The transport's floor: a bare grpc.aio unary round trip (tooling/echo.py), one at a time.
ECHO_NAME = "bare grpc.aio round trip"
STORES = ("sqlite", "postgresql")
#: The CPU column of PostgreSQL (the postmaster and its backends).
POSTGRES_CPU = "postgresql"


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _tree_cpu_seconds(pid: int) -> float:
    """A process's CPU and its live children's (PostgreSQL's backends are the postmaster's)."""
    total = _cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # Gone meanwhile.
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _cpu(name: str, pid: int) -> float:
    return _tree_cpu_seconds(pid) if name == POSTGRES_CPU else _cpu_seconds(pid)


def progress(text: str) -> None:
    """Show the run is alive: one line a phase (stderr, so stdout keeps only the report)."""
    sys.stderr.write(f"[pta-bench] {text}\n")
    sys.stderr.flush()


def _measure(  # noqa: PLR0913 - one phase's facts, by name
    name: str,
    concurrency: int,
    pids: dict[str, int],
    run: Any,
    duration: float,
    *,
    api: str | None = None,
) -> PhaseResult:
    """Run one phase: ``run(start_at, until)`` returns samples; other processes' CPU is read."""
    start_at = time.time() + SETTLE
    until = start_at + duration
    progress(f"{name}: {concurrency} in flight, {duration:.0f} s ...")
    pending = run(start_at, until)
    time.sleep(max(0.0, start_at - time.time()))
    before = {n: _cpu(n, p) for n, p in pids.items()}
    time.sleep(max(0.0, until - time.time()))
    after = {n: _cpu(n, p) for n, p in pids.items()}
    samples: list[Sample] = pending()
    latencies = [x for s in samples for x in s.latencies_ms]
    count = len(latencies)
    cpu = {n: after[n] - before[n] for n in pids}
    cpu["load generator"] = sum(s.cpu_seconds for s in samples)
    result = PhaseResult(
        name=name,
        concurrency=concurrency,
        api=api,
        count=count,
        wrong=sum(s.wrong for s in samples),
        errors=sum(s.errors for s in samples),
        seconds=duration,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p95_ms=_percentile(latencies, 0.95),
        p99_ms=_percentile(latencies, 0.99),
        cpu_ms_per_op={n: 1000 * v / max(count, 1) for n, v in cpu.items()},
    )
    progress(f"{name}: {result.rate:.0f}/s, p50 {result.p50_ms:.2f} ms")
    return result


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``levels`` and ``apis`` parsed out of their comma lists."""
    parser = argparse.ArgumentParser(
        prog="python -m tooling.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--agents", type=int, default=1, help="agents of the tenant")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated")
    parser.add_argument("--users", type=int, default=200, help="users in the directory")
    parser.add_argument(
        "--load-processes", type=int, default=2, help="processes generating load (at most)"
    )
    parser.add_argument(
        "--api",
        default=",".join(APIS),
        help="comma-separated: unary (SignIn), stream (SignInStream)",
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        help="comma-separated: sqlite (the embedded default), postgresql (a private server,"
        " its CPU counted like slapd's); each its own broker and agents, measured in turn",
    )
    parser.add_argument(
        "--brokers",
        default="1",
        help="comma-separated: broker processes per PostgreSQL deployment (a cluster on one"
        " store); SQLite serves one broker only",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also measure each deployment with --metrics-listen (what counting costs)",
    )
    parser.add_argument(
        "--lockout",
        action="store_true",
        help="keep the tenant's default lockout (the broker then decides every sign-in with"
        " its counters, in the store when shared, and answers the mix's repeated wrong"
        " passwords itself); off by default, so that every sign-in reaches the directory",
    )
    parser.add_argument("--json", type=Path, help="write the whole result here")
    args = parser.parse_args(argv)
    args.stores = list(dict.fromkeys(args.store.split(",")))
    if set(args.stores) - set(STORES):
        parser.error(f"--store takes a comma-separated list of {', '.join(STORES)}")
    args.brokers = sorted({int(n) for n in args.brokers.split(",")})
    if args.brokers[0] < 1:
        parser.error("--brokers takes counts of 1 or more")
    if args.brokers != [1] and "postgresql" not in args.stores:
        parser.error("--brokers above 1 needs --store postgresql (a cluster shares one store)")
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.apis = [a for a in APIS if a in args.api.split(",")]
    if not args.apis or set(args.api.split(",")) - set(APIS):
        parser.error(f"--api takes a comma-separated list of {', '.join(APIS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when any answer was wrong."""
    args = _arguments(argv)
    pta_logging.configure(level="warning")

    uids = [f"u{n:05d}" for n in range(args.users)]
    password_of = {uid: f"pw-{uid}-Bench!" for uid in uids}
    mix: list[Case] = cases(uids, password_of)
    users = [DirectoryUser(uid=uid, password=password_of[uid]) for uid in uids]
    workdir = Path(tempfile.mkdtemp(prefix="pta-bench-"))
    results: list[PhaseResult] = []
    context = multiprocessing.get_context("spawn")
    try:
        with (
            Slapd(users=users, policy=NO_LOCKOUT) as slapd,
            ProcessPoolExecutor(args.load_processes, mp_context=context) as pool,
        ):
            if slapd.pid is None:  # A started Slapd has its process.
                raise RuntimeError("slapd did not start")
            progress(f"slapd with {args.users} users at {slapd.url}; starting broker and agents")
            dn_of = {uid: slapd.user_dn(uid) for uid in uids}
            slapd_only = {"slapd": slapd.pid}

            def baseline_slice() -> PhaseResult:
                """One slice of the baseline: the same direct binds, as long as a phase."""
                return _measure(
                    BASELINE_NAME,
                    1,
                    slapd_only,
                    lambda start, until: _later(
                        pool.submit(direct_binds, slapd.url, dn_of, mix, start, until)
                    ),
                    args.duration,
                )

            with contextlib.ExitStack() as running:
                deployments = {
                    _label(store, n, metrics=m): _deploy(
                        running,
                        workdir / f"{store}-{n}{'-metrics' if m else ''}",
                        store,
                        brokers=n,
                        slapd=slapd,
                        args=args,
                        metrics=m,
                    )
                    for store in args.stores
                    for n in (args.brokers if store == "postgresql" else [1])
                    for m in ((False, True) if args.metrics else (False,))
                }
                results.append(_round_trip(running, workdir / "echo", pool, args.duration))
                # The first slice runs with brokers and agents up (idle), as every later one
                # does, and right before the first level, not before their start-up.
                results.append(baseline_slice())
                # Each level over each API and store in turn, then a baseline slice: what is
                # compared is measured minutes apart at most, each next to a baseline, on a
                # machine whose speed drifts.
                for level in args.levels:
                    procs = max(1, min(args.load_processes, level // 8))
                    shares = [level // procs + (i < level % procs) for i in range(procs)]
                    for api in args.apis:
                        for store, (cluster, pids) in deployments.items():

                            def run(
                                start: float,
                                until: float,
                                shares: list[int] = shares,
                                api: str = api,
                                cluster: LocalDeployment = cluster,
                            ) -> Any:
                                ca = cluster.ca_file.read_bytes()
                                publics = list(cluster.brokers.values())
                                futures = [
                                    pool.submit(
                                        end_to_end,
                                        LoadSpec(
                                            # Load process i sends to broker i mod n.
                                            target=publics[i % len(publics)],
                                            ca=ca,
                                            domain=DOMAIN,
                                            mix=mix[i :: len(shares)],
                                            concurrency=share,
                                            start_at=start,
                                            until=until,
                                            api=api,
                                        ),
                                    )
                                    for i, share in enumerate(shares)
                                ]
                                return lambda: [f.result() for f in futures]

                            phase = _measure(
                                PHASE_NAMES[api],
                                level,
                                pids | slapd_only,
                                run,
                                args.duration,
                                api=api,
                            )
                            results.append(replace(phase, store=store))
                    results.append(baseline_slice())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = report_of(results, args)
    sys.stdout.write(report["table"])
    if args.json:
        args.json.write_text(
            json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2)
        )
    return 1 if any(r.wrong or r.errors for r in results) else 0


def _label(store: str, brokers: int, *, metrics: bool = False) -> str:
    """A deployment's name in the report: its store, its broker count above one, +metrics."""
    name = store if brokers == 1 else f"{store} x{brokers}"
    return f"{name} +metrics" if metrics else name


def _deploy(  # noqa: PLR0913 - one deployment's facts, by name
    running: contextlib.ExitStack,
    workdir: Path,
    store: str,
    *,
    brokers: int,
    slapd: Slapd,
    args: argparse.Namespace,
    metrics: bool = False,
) -> tuple[LocalDeployment, dict[str, int]]:
    """``brokers`` brokers on ``store`` with the agents, running until ``running`` closes; pids.

    For PostgreSQL, a private server started here; its pid stands for the postmaster and
    every backend (their CPU is summed, like slapd's). Brokers after the first join the
    first's cluster; every agent attaches to each of them. With ``metrics`` every broker
    and agent counts for Prometheus (``--metrics-listen``; nothing scrapes them meanwhile).
    """
    workdir.mkdir()
    extra: dict[str, int] = {}
    store_url = ""
    if store == "postgresql":
        server = running.enter_context(Postgres())
        if server.pid is None:
            raise RuntimeError("postgresql did not start")
        store_url, extra = server.url, {POSTGRES_CPU: server.pid}
    cluster = running.enter_context(LocalDeployment(workdir))
    for n in range(brokers):
        cluster.start_broker(
            *(("--metrics-listen", "127.0.0.1:0") if metrics else ()),
            store_url=store_url,
            name="broker" if n == 0 else f"broker-{n + 1}",
        )
    cluster.broker_cli("tenant", "add", "bench", "--domain", DOMAIN)
    if not args.lockout:
        # The same wrong password, over and over, for the same users: the broker's lockout
        # would (rightly) answer those itself, and they would measure no directory.
        cluster.broker_cli("tenant", "policy", "bench", "--lockout-threshold", "0")
    for n in range(args.agents):
        cluster.enrol_agent(f"agent-{n}", "bench")
        cluster.run_agent(
            f"agent-{n}",
            slapd,
            *(("--metrics-listen", f"127.0.0.1:{free_port()}") if metrics else ()),
        )
    if brokers > 1:  # Every agent at every broker before anything is measured.
        wait_until(
            lambda: all(cluster.connected(b) >= args.agents for b in cluster.brokers),
            "every agent at every broker",
        )
    label = _label(store, brokers, metrics=metrics)
    progress(f"{label}: {brokers} broker(s) and {args.agents} agent(s) serving")
    return cluster, {n: p.pid for n, p in cluster.processes.items()} | extra


def _round_trip(
    running: contextlib.ExitStack, workdir: Path, pool: ProcessPoolExecutor, duration: float
) -> PhaseResult:
    """The bare grpc.aio round trip between two processes, same TLS, one in flight."""
    process, target, ca = echo.start(workdir)
    running.callback(_stop, process)
    return _measure(
        ECHO_NAME,
        1,
        {"echo server": process.pid},
        lambda start, until: _later(pool.submit(echo_round_trips, target, ca, start, until)),
        duration,
        api="echo",
    )


def _stop(process: Any) -> None:
    process.terminate()
    process.wait(10)


def _later(future: Any) -> Any:
    """What ``_measure`` calls for a one-process phase's samples, once its window is over."""
    return lambda: [future.result()]


if __name__ == "__main__":
    sys.exit(main())
