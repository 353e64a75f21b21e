"""The benchmark still runs (briefly): speed is measured by ``make bench``, not by tests."""

from __future__ import annotations

import json
import statistics
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import BIN, ROOT
from tooling.bench_report import PhaseResult, _ratios, _with_adjacent_baselines

if TYPE_CHECKING:
    from pathlib import Path


class TestBenchSmoke:
    """``python -m tooling.bench`` end to end, one second a phase."""

    def test_bench_runs_and_reports(self, tmp_path: Path) -> None:
        """It exits 0 (every answer right) and writes the ratios the issue names."""
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "python"),
                "-m",
                "tooling.bench",
                "--duration",
                "1",
                "--concurrency",
                "1,8",
                "--users",
                "20",
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        assert report["throughput_ratio"] > 0
        assert report["throughput_ratio_stream"] > 0
        assert isinstance(report["added_p50_ms_c1"], float)
        assert isinstance(report["added_p50_ms_c1_stream"], float)
        assert report["baseline_spread"] >= 1
        echo, *phases = report["phases"]
        # The bare grpc.aio round trip first (the unit of added latency), then a baseline
        # slice, then each level over each API in turn (unary then stream), each level
        # followed by a baseline slice.
        assert (echo["api"], echo["name"], echo["wrong"], echo["errors"]) == (
            "echo", "bare grpc.aio round trip", 0, 0,
        )  # fmt: skip
        assert echo["count"] > 0
        assert echo["throughput_ratio"] is None
        assert report["bare_round_trip_p50_ms"] == echo["p50_ms"] > 0
        assert report["added_p50_round_trips_c1"] == pytest.approx(
            report["added_p50_ms_c1"] / echo["p50_ms"], abs=0.01
        )
        assert [(p["api"], p["concurrency"]) for p in phases] == [
            (None, 1),
            ("unary", 1),
            ("stream", 1),
            (None, 1),
            ("unary", 8),
            ("stream", 8),
            (None, 1),
        ]
        assert all(p["count"] > 0 and p["wrong"] == 0 and p["errors"] == 0 for p in phases)
        slices = [p for p in phases if p["api"] is None]
        assert {p["name"] for p in slices} == {"direct ldap3 bind"}
        rates = [p["per_second"] for p in slices]
        assert report["baseline_spread"] == pytest.approx(max(rates) / min(rates), abs=0.01)
        for slice_ in slices:
            assert slice_["throughput_ratio"] is None
            assert slice_["baseline_rate"] is None
        for i, phase in enumerate(phases):
            if phase["api"] is None:
                continue
            assert {"broker", "agent-0", "slapd", "load generator"} <= set(phase["cpu_ms_per_op"])
            # Against the slices on either side of its level, not the first one alone.
            before = [p for p in phases[:i] if p["api"] is None][-1]
            after = next(p for p in phases[i + 1 :] if p["api"] is None)
            _check_adjacent(phase, [before, after])
        unary = [p["throughput_ratio"] for p in phases if p["api"] == "unary"]
        assert report["throughput_ratio"] == max(unary)
        (c1,) = [p for p in phases if p["api"] == "unary" and p["concurrency"] == 1]
        added = c1["p50_ms"] - c1["baseline_p50_ms"]
        assert report["added_p50_ms_c1"] == pytest.approx(added, abs=0.002)
        assert "unary  throughput ratio" in done.stdout
        assert "stream throughput ratio" in done.stdout
        assert done.stdout.count("adjacent direct bind") == 4  # Two ratios, two p50s.
        assert "baseline spread" in done.stdout
        assert "bare round trips of" in done.stdout

    def test_one_api(self, tmp_path: Path) -> None:
        """``--api stream`` measures only the stream; the unary ratio is then absent (null)."""
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "python"),
                "-m",
                "tooling.bench",
                *("--duration", "0.5", "--concurrency", "4", "--users", "10"),
                *("--api", "stream", "--json", str(out)),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        assert report["throughput_ratio"] is None
        assert report["throughput_ratio_stream"] > 0
        assert report["baseline_spread"] >= 1
        phases = report["phases"]
        assert [p["api"] for p in phases] == ["echo", None, "stream", None]
        _check_adjacent(phases[2], [phases[1], phases[3]])

    def test_stores_and_brokers(self, tmp_path: Path) -> None:
        """``--store sqlite,postgresql --brokers 1,2``: three deployments beside one baseline.

        Each is measured at every level, each load process sends to one broker of the
        cluster in turn (both brokers' CPU moves), and the ratios compare PostgreSQL with
        SQLite and two brokers with one.
        """
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "python"),
                "-m",
                "tooling.bench",
                *("--duration", "0.5", "--concurrency", "16", "--users", "10"),
                *("--api", "stream", "--store", "sqlite,postgresql", "--brokers", "1,2"),
                *("--json", str(out)),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        phases = report["phases"]
        assert [p["store"] for p in phases] == [
            None, None, "sqlite", "postgresql", "postgresql x2", None,
        ]  # fmt: skip
        assert all(p["count"] > 0 and p["wrong"] == 0 and p["errors"] == 0 for p in phases)
        (two,) = [p for p in phases if p["store"] == "postgresql x2"]
        assert two["cpu_ms_per_op"]["broker"] > 0
        assert two["cpu_ms_per_op"]["broker-2"] > 0
        # Counted (without lockout a sign-in asks PostgreSQL nothing: it may well be 0).
        assert two["cpu_ms_per_op"]["postgresql"] >= 0
        ratios = report["store_ratios"]
        assert set(ratios) == {
            "postgresql/sqlite",
            "postgresql x2/sqlite",
            "postgresql x2/postgresql",
        }
        assert all(v["stream"]["16"] > 0 for v in ratios.values())
        assert "postgresql x2 / postgresql at 16 in flight" in done.stdout

    def test_metrics_on_and_off(self, tmp_path: Path) -> None:
        """``--metrics``: each deployment again with ``--metrics-listen``, and their ratio."""
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "python"),
                "-m",
                "tooling.bench",
                *("--duration", "0.5", "--concurrency", "4", "--users", "10"),
                *("--api", "stream", "--metrics", "--json", str(out)),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        assert [p["store"] for p in report["phases"]] == [
            None, None, "sqlite", "sqlite +metrics", None,
        ]  # fmt: skip
        assert set(report["store_ratios"]) == {"sqlite +metrics/sqlite"}
        assert "(metrics on / off)" in done.stdout

    def test_brokers_need_a_shared_store(self) -> None:
        """Two SQLite brokers would be two clusters: refused before anything starts."""
        done = subprocess.run(
            [str(BIN / "python"), "-m", "tooling.bench", "--brokers", "2"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "--brokers above 1 needs --store postgresql" in done.stderr


def _check_adjacent(phase: dict[str, Any], near: list[dict[str, Any]]) -> None:
    """The phase's baseline is the mean of ``near`` (the JSON's rounding allowed for)."""
    rate = statistics.fmean(p["per_second"] for p in near)
    p50 = statistics.fmean(p["p50_ms"] for p in near)
    assert phase["baseline_rate"] == pytest.approx(rate, abs=0.1)
    assert phase["baseline_p50_ms"] == pytest.approx(p50, abs=0.002)
    ratio = phase["per_second"] / phase["baseline_rate"]
    assert phase["throughput_ratio"] == pytest.approx(ratio, abs=0.001)
    assert phase["throughput_ratio"] > 0


def _phase(api: str | None, concurrency: int, count: int, p50_ms: float) -> PhaseResult:
    return PhaseResult(
        name=api or "direct ldap3 bind",
        concurrency=concurrency,
        api=api,
        count=count,
        wrong=0,
        errors=0,
        seconds=1.0,
        p50_ms=p50_ms,
        p95_ms=p50_ms,
        p99_ms=p50_ms,
        cpu_ms_per_op={},
    )


class TestAdjacentBaselines:
    """The arithmetic, on made-up phases: each is compared with the slices around its level."""

    def test_each_level_against_its_own_slices(self) -> None:
        """A machine that halves its speed mid-run: the raw rate's best level is not the best."""
        results = _with_adjacent_baselines(
            [
                _phase(None, 1, 4000, 0.2),
                _phase("unary", 1, 400, 3.2),
                _phase(None, 1, 2000, 0.4),
                _phase("unary", 64, 600, 50.0),
                _phase(None, 1, 1000, 0.6),
            ]
        )
        assert [r.baseline and r.baseline.rate for r in results] == [None, 3000, None, 1500, None]
        assert [r.ratio for r in results] == [None, pytest.approx(400 / 3000), None, 0.4, None]
        best, ratio, added = _ratios(results)
        assert best is results[3]
        assert ratio == 0.4
        assert added == pytest.approx(3.2 - 0.3)

    def test_one_sided(self) -> None:
        """A phase with a slice on one side only (no later slice) uses that one."""
        results = _with_adjacent_baselines(
            [_phase(None, 1, 2000, 0.3), _phase("stream", 4, 500, 9)]
        )
        assert results[1].ratio == 0.25
        assert _ratios([]) == (None, None, None)
