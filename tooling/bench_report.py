"""The benchmark's results: phases, their adjacent baselines, the ratios and the printed table.

Every figure is a ratio against a baseline measured in the same run (see :mod:`tooling.bench`).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tooling.loadgen import APIS

if TYPE_CHECKING:
    import argparse


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
    #: "unary" or "stream"; None for the direct-bind baseline; "echo" for the bare grpc.aio
    #: round trip (tooling/echo.py), measured once, the unit added latency is counted in.
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
    #: The deployment: its store, "sqlite" (the embedded default) or "postgresql", and
    #: " xN" after it for a cluster of N broker processes on that store.
    store: str = "sqlite"

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
            "store": self.store if self.api in APIS else None,
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
        if r.api not in APIS or not near:
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


def report_of(results: list[PhaseResult], args: argparse.Namespace) -> dict[str, Any]:
    """The printed table and the JSON's fields, every ratio against the adjacent baseline.

    The top-level ratios are the first store's (the embedded default, SQLite, unless it was
    not measured); every store's are under ``stores``, and each other store's throughput
    over the first's, level by level, under ``store_ratios`` (both phases against their
    own adjacent baselines, so the machine's drift cancels).
    """
    results = _with_adjacent_baselines(results)
    slices = [r for r in results if r.api is None]
    stores = list(dict.fromkeys(r.store for r in results if r.api in APIS)) or ["sqlite"]
    trip = next((r.p50_ms for r in results if r.api == "echo" and r.count), None)
    names = sorted({n for r in results for n in r.cpu_ms_per_op})
    lines = [
        f"{'phase':<34} {'in flight':>9} {'per s':>8} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'wrong':>6}  CPU ms per op: " + ", ".join(names),
    ]
    for r in results:
        cpu = ", ".join(f"{r.cpu_ms_per_op.get(n, 0.0):.3f}" for n in names)
        shown = "-" if r.ratio is None else f"{r.ratio:.2f}"
        name = r.name if r.api not in APIS or len(stores) == 1 else f"{r.name} ({r.store})"
        lines.append(
            f"{name:<34} {r.concurrency:>9} {r.rate:>8.0f} {shown:>6} {r.p50_ms:>8.3f} "
            f"{r.p95_ms:>8.3f} {r.p99_ms:>8.3f} {r.wrong + r.errors:>6}  {cpu}"
        )
    lines.append("")
    per_store = {
        store: _summary(
            [r for r in results if r.store == store and r.api in APIS],
            lines,
            store,
            named=len(stores) > 1,
            trip=trip,
        )
        for store in stores
    }
    store_ratios = _store_ratios(results, stores, lines)
    spread = _spread(slices)
    if spread is not None:
        lines.append(
            f"baseline spread (fastest / slowest of {len(slices)} direct-bind slices, "
            f"{min(r.rate for r in slices):.0f}-{max(r.rate for r in slices):.0f}/s): "
            f"{spread:.2f}"
        )
    return {
        "table": "\n".join(lines) + "\n",
        **per_store[stores[0]],
        "stores": per_store,
        "store_ratios": store_ratios,
        "baseline_spread": _rounded(spread, 3),
        "bare_round_trip_p50_ms": _rounded(trip, 3),
        "apis": [api for api in APIS if any(r.api == api for r in results)],
        "agents": args.agents,
        "lockout": args.lockout,
        "users": args.users,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "phases": [r.as_dict() for r in results],
    }


def _summary(
    results: list[PhaseResult], lines: list[str], store: str, *, named: bool, trip: float | None
) -> dict[str, float | None]:
    """One store's best throughput ratio and added p50 per API (appending their lines).

    The added p50 is also given in bare grpc.aio round trips (``trip``, its p50 in ms): a
    sign-in needs two, and one bind, which the baseline's p50 already holds.
    """
    summary: dict[str, float | None] = {}
    label = f" ({store})" if named else ""
    for api in APIS:
        best, ratio, added = _ratios([r for r in results if r.api == api])
        suffix = "" if api == "unary" else f"_{api}"
        summary[f"throughput_ratio{suffix}"] = _rounded(ratio, 3)
        summary[f"added_p50_ms_c1{suffix}"] = _rounded(added, 3)
        trips = added / trip if added is not None and trip else None
        summary[f"added_p50_round_trips_c1{suffix}"] = _rounded(trips, 2)
        if best is None or best.baseline is None or ratio is None:
            continue
        lines.append(
            f"{api:<6} throughput ratio{label} (end to end at {best.concurrency}, "
            f"{best.rate:.0f}/s / adjacent direct bind, {best.baseline.rate:.0f}/s): "
            f"{ratio:.2f}   target >= 0.5, stretch 1.0"
        )
        if added is not None:
            in_trips = "" if trips is None else f" = {trips:.1f} bare round trips of {trip:.3f} ms"
            lines.append(
                f"{api:<6} added p50 at concurrency 1{label} (over adjacent direct bind): "
                f"{added:.3f} ms{in_trips}   target <= 1 ms, stretch <= 2 round trips + 0.2 ms"
            )
    return summary


def _store_ratios(
    results: list[PhaseResult], stores: list[str], lines: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Each other deployment's ratio over the first's, per API and level (with lines).

    A cluster of N brokers is also compared with one broker on its store: what the other
    processes add on this machine.
    """
    first = stores[0]
    pairs = [(store, first) for store in stores[1:] if not store.endswith(" +metrics")]
    pairs += [
        (store, store.partition(" x")[0])
        for store in stores
        if " x" in store and store.partition(" x")[0] in stores[1:]
    ]
    # What counting for Prometheus costs: each deployment with metrics over the same without.
    pairs += [
        (store, store.removesuffix(" +metrics"))
        for store in stores
        if store.endswith(" +metrics") and store.removesuffix(" +metrics") in stores
    ]
    found: dict[str, dict[str, dict[str, float]]] = {}
    for store, base in pairs:
        target = (
            "target >= 0.8"
            if base == first and "+metrics" not in store
            else "(metrics on / off)"
            if store.endswith("+metrics")
            else "(more broker processes, one machine)"
        )
        for api in APIS:
            for level in sorted({r.concurrency for r in results if r.api == api}):
                ours = _phase(results, store, api, level)
                theirs = _phase(results, base, api, level)
                if ours is None or theirs is None or not ours.ratio or not theirs.ratio:
                    continue
                value = ours.ratio / theirs.ratio
                found.setdefault(f"{store}/{base}", {}).setdefault(api, {})[str(level)] = round(
                    value, 3
                )
                lines.append(
                    f"{api:<6} {store} / {base} at {level} in flight: {value:.2f}   {target}"
                )
    return found


def _phase(results: list[PhaseResult], store: str, api: str, level: int) -> PhaseResult | None:
    return next(
        (r for r in results if (r.store, r.api, r.concurrency) == (store, api, level)), None
    )
