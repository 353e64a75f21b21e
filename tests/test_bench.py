"""The benchmark still runs (briefly): speed is measured by ``make bench``, not by tests."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from tests.support import BIN

if TYPE_CHECKING:
    from pathlib import Path


class TestBenchSmoke:
    """``pta-bench`` end to end, one second a phase."""

    def test_bench_runs_and_reports(self, tmp_path: Path) -> None:
        """It exits 0 (every answer right) and writes the ratios the issue names."""
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "pta-bench"),
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
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        assert report["throughput_ratio"] > 0
        assert report["throughput_ratio_stream"] > 0
        assert isinstance(report["added_p50_ms_c1"], float)
        assert isinstance(report["added_p50_ms_c1_stream"], float)
        phases = report["phases"]
        # Each level over each API in turn: unary then stream.
        assert [(p["api"], p["concurrency"]) for p in phases] == [
            (None, 1),
            ("unary", 1),
            ("stream", 1),
            ("unary", 8),
            ("stream", 8),
        ]
        assert all(p["count"] > 0 and p["wrong"] == 0 and p["errors"] == 0 for p in phases)
        for phase in phases[1:]:
            assert {"broker", "agent-0", "slapd", "load generator"} <= set(phase["cpu_ms_per_op"])
        assert "unary  throughput ratio" in done.stdout
        assert "stream throughput ratio" in done.stdout

    def test_one_api(self, tmp_path: Path) -> None:
        """``--api stream`` measures only the stream; the unary ratio is then absent (null)."""
        out = tmp_path / "bench.json"
        done = subprocess.run(
            [
                str(BIN / "pta-bench"),
                *("--duration", "0.5", "--concurrency", "4", "--users", "10"),
                *("--api", "stream", "--json", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(out.read_text())
        assert report["throughput_ratio"] is None
        assert report["throughput_ratio_stream"] > 0
        assert [p["api"] for p in report["phases"]] == [None, "stream"]
