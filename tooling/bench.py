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

Ratios, not absolute numbers, are what carry from one machine to another. Each end-to-end phase
is compared with its adjacent baseline, the mean of the slices just before and just after its
level: this machine's speed moves by 2x within a run, and a baseline measured a minute earlier
says little about the machine a phase ran on. The spread of the slices says how much it moved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pta import logging as pta_logging
from tooling.loadgen import APIS, Case, LoadSpec, Sample, cases, direct_binds, end_to_end
from tooling.localrun import LocalDeployment
from tooling.slapd import DirectoryUser, Slapd

DOMAIN = "bench.example"
TICKS = os.sysconf("SC_CLK_TCK")
#: Wrong passwords would lock the benchmark's users: its directory has no lockout (nor has
#: its tenant at the broker, below).
NO_LOCKOUT = {"pwdLockout": "FALSE", "pwdMaxFailure": "0"}
SETTLE = 1.5  # seconds between starting a phase and its measured window
PHASE_NAMES = {"unary": "end to end", "stream": "end to end stream"}
BASELINE_NAME = "direct ldap3 bind"


@dataclass(frozen=True, slots=True)
class Baseline:
    """What an end-to-end phase is compared with: its adjacent baseline.

    The mean of the direct-bind slices measured just before and just after the phase's level,
    so that the phase and its baseline saw the machine at about the same speed.
    """

    rate: float
    p50_ms: float


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One measured phase."""

    name: str
    concurrency: int
    #: "unary" or "stream"; None for the direct-bind baseline.
    api: str | None
    count: int
    wrong: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    #: Process name -> CPU milliseconds per sign-in over the window.
    cpu_ms_per_op: dict[str, float]
    #: The adjacent baseline, once known (after the next slice); None for a baseline slice.
    baseline: Baseline | None = None

    @property
    def rate(self) -> float:
        """Operations per second over the measured window."""
        return self.count / self.seconds

    @property
    def ratio(self) -> float | None:
        """Throughput over the adjacent baseline's; None without one (or if it bound nothing)."""
        if self.baseline is None or not self.baseline.rate:
            return None
        return self.rate / self.baseline.rate

    def as_dict(self) -> dict[str, Any]:
        """The phase as the JSON report has it."""
        return {
            "name": self.name,
            "api": self.api,
            "concurrency": self.concurrency,
            "count": self.count,
            "wrong": self.wrong,
            "errors": self.errors,
            "seconds": self.seconds,
            "per_second": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "cpu_ms_per_op": {k: round(v, 3) for k, v in self.cpu_ms_per_op.items()},
            "baseline_rate": _rounded(self.baseline.rate if self.baseline else None, 1),
            "baseline_p50_ms": _rounded(self.baseline.p50_ms if self.baseline else None, 3),
            "throughput_ratio": _rounded(self.ratio, 3),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    """``round`` that lets the JSON's null (nothing to compare with) through."""
    return None if value is None else round(value, digits)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


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
    before = {n: _cpu_seconds(p) for n, p in pids.items()}
    time.sleep(max(0.0, until - time.time()))
    after = {n: _cpu_seconds(p) for n, p in pids.items()}
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
    parser.add_argument("--json", type=Path, help="write the whole result here")
    args = parser.parse_args(argv)
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

            with LocalDeployment(workdir) as cluster:
                cluster.start_broker()
                cluster.broker_cli("tenant", "add", "bench", "--domain", DOMAIN)
                # The same wrong password, over and over, for the same users: the broker's
                # lockout would (rightly) answer those itself, and measure nothing.
                cluster.broker_cli("tenant", "policy", "bench", "--lockout-threshold", "0")
                for n in range(args.agents):
                    cluster.enrol_agent(f"agent-{n}", "bench")
                    cluster.run_agent(f"agent-{n}", slapd)
                ca = cluster.ca_file.read_bytes()
                pids = {n: p.pid for n, p in cluster.processes.items()} | slapd_only
                # The first slice runs with broker and agents up (idle), as every later one
                # does, and right before the first level, not before their start-up.
                results.append(baseline_slice())
                # Each level over each API in turn, then a baseline slice: the two APIs are
                # measured minutes apart at most, each next to a baseline, on a machine whose
                # speed drifts.
                for level in args.levels:
                    procs = max(1, min(args.load_processes, level // 8))
                    shares = [level // procs + (i < level % procs) for i in range(procs)]
                    for api in args.apis:

                        def run(
                            start: float, until: float, shares: list[int] = shares, api: str = api
                        ) -> Any:
                            futures = [
                                pool.submit(
                                    end_to_end,
                                    LoadSpec(
                                        target=cluster.public,
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

                        results.append(
                            _measure(PHASE_NAMES[api], level, pids, run, args.duration, api=api)
                        )
                    results.append(baseline_slice())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = _report(results, args)
    sys.stdout.write(report["table"])
    if args.json:
        args.json.write_text(
            json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2)
        )
    return 1 if any(r.wrong or r.errors for r in results) else 0


def _later(future: Any) -> Any:
    """What ``_measure`` calls for a one-process phase's samples, once its window is over."""
    return lambda: [future.result()]


def _with_adjacent_baselines(results: list[PhaseResult]) -> list[PhaseResult]:
    """Each end-to-end phase with its adjacent baseline: the slices on either side of it.

    Slices run before the first level and after each level, so the nearest slice before a
    phase and the nearest after it bracket its level in time; their mean is the best guess of
    the machine's speed while the phase ran. A phase with a slice on one side only gets that
    one; baseline slices themselves are left without.
    """
    slices = [i for i, r in enumerate(results) if r.api is None]
    adjacent: list[PhaseResult] = []
    for i, r in enumerate(results):
        before = [results[j] for j in slices if j < i][-1:]
        after = [results[j] for j in slices if j > i][:1]
        near = before + after
        if r.api is None or not near:
            adjacent.append(r)
            continue
        baseline = Baseline(
            rate=statistics.fmean(b.rate for b in near),
            p50_ms=statistics.fmean(b.p50_ms for b in near),
        )
        adjacent.append(replace(r, baseline=baseline))
    return adjacent


def _ratios(phases: list[PhaseResult]) -> tuple[PhaseResult | None, float | None, float | None]:
    """The best phase, its throughput ratio, and the added p50 at 1 in flight.

    Every figure is against each phase's own adjacent baseline. "Best" is the highest ratio,
    not the highest raw rate: levels ran minutes apart at different machine speeds, so a raw
    rate says as much about the machine at that moment as about the level.
    """
    compared = [r for r in phases if r.ratio is not None]
    if not compared:
        return None, None, None
    best = max(compared, key=lambda r: r.ratio or 0.0)
    c1 = next((r for r in compared if r.concurrency == 1), None)
    added = c1.p50_ms - c1.baseline.p50_ms if c1 is not None and c1.baseline else None
    return best, best.ratio, added


def _spread(slices: list[PhaseResult]) -> float | None:
    """The fastest baseline slice's rate over the slowest's: how far the machine moved.

    1.0 is a steady machine; the further above, the less any one ratio of the run can be
    trusted, even against its adjacent baseline. None when a slice bound nothing.
    """
    rates = [r.rate for r in slices]
    if not rates or min(rates) <= 0:
        return None
    return max(rates) / min(rates)


def _report(results: list[PhaseResult], args: argparse.Namespace) -> dict[str, Any]:
    """The printed table and the JSON's fields, every ratio against the adjacent baseline."""
    results = _with_adjacent_baselines(results)
    slices = [r for r in results if r.api is None]
    by_api = {api: [r for r in results if r.api == api] for api in APIS}
    names = sorted({n for r in results for n in r.cpu_ms_per_op})
    lines = [
        f"{'phase':<18} {'in flight':>9} {'per s':>8} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'wrong':>6}  CPU ms per op: " + ", ".join(names),
    ]
    for r in results:
        cpu = ", ".join(f"{r.cpu_ms_per_op.get(n, 0.0):.3f}" for n in names)
        shown = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(
            f"{r.name:<18} {r.concurrency:>9} {r.rate:>8.0f} {shown:>6} {r.p50_ms:>8.3f} "
            f"{r.p95_ms:>8.3f} {r.p99_ms:>8.3f} {r.wrong + r.errors:>6}  {cpu}"
        )
    report: dict[str, Any] = {}
    lines.append("")
    for api in APIS:
        best, ratio, added = _ratios(by_api[api])
        suffix = "" if api == "unary" else f"_{api}"
        report[f"throughput_ratio{suffix}"] = _rounded(ratio, 3)
        report[f"added_p50_ms_c1{suffix}"] = _rounded(added, 3)
        if best is None or best.baseline is None or ratio is None:
            continue
        lines.append(
            f"{api:<6} throughput ratio (end to end at {best.concurrency}, {best.rate:.0f}/s / "
            f"adjacent direct bind, {best.baseline.rate:.0f}/s): {ratio:.2f}   "
            "target >= 0.5, stretch 1.0"
        )
        if added is not None:
            lines.append(
                f"{api:<6} added p50 at concurrency 1 (over adjacent direct bind): "
                f"{added:.3f} ms   target <= 1 ms, stretch 0.5 ms"
            )
    spread = _spread(slices)
    if spread is not None:
        lines.append(
            f"baseline spread (fastest / slowest of {len(slices)} direct-bind slices, "
            f"{min(r.rate for r in slices):.0f}-{max(r.rate for r in slices):.0f}/s): "
            f"{spread:.2f}"
        )
    return {
        "table": "\n".join(lines) + "\n",
        **report,
        "baseline_spread": _rounded(spread, 3),
        "apis": [api for api in APIS if by_api[api]],
        "agents": args.agents,
        "users": args.users,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "phases": [r.as_dict() for r in results],
    }


if __name__ == "__main__":
    sys.exit(main())
