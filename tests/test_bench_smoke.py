"""The benchmark harness runs end to end at tiny counts and reports every figure (whose values mean nothing here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIGURES = {"1", "2", "3", "4", "5", "6a", "6b", "7a", "7b", "7c", "7d", "8a", "8b", "9"}


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    results = json.loads(output.read_text())
    assert {figure["number"] for figure in results["figures"]} == FIGURES
    assert results["failures"] == []
    assert results["machine"]["cpuCount"] >= 1
    assert results["machine"]["temporalio"]
    for figure in results["figures"]:
        assert figure["floors"], figure["number"]
        for series in (figure["product"], *figure["floors"]):
            assert series["values"], (figure["number"], series["label"])
            assert all(math.isfinite(value) for value in series["values"].values()), series
    by_number = {figure["number"]: figure for figure in results["figures"]}
    assert by_number["4"]["product"]["values"]["value"] > 0
    assert by_number["1"]["product"]["values"]["p50"] > 0
    assert by_number["1"]["floors"][0]["ratio"]["p50"] > 0
    table_lines = [line.split()[0] for line in run.stdout.splitlines() if line[:1].isdigit()]
    assert set(table_lines) == FIGURES
