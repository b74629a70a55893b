"""The benchmark harness runs end to end at tiny counts and reports every figure (whose values mean nothing here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Figure, Series, write_results

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIGURES = {
    "1",
    "2",
    "3",
    "4",
    "5a",
    "5b",
    "6a",
    "6b",
    "6c",
    "6d",
    "7a",
    "7b",
    "7c",
    "7d",
    "8a",
    "8b",
    "9",
    "10",
    "11",
    "11b",
    "12",
}


@pytest.mark.timeout(300)  # every figure once, quickly: ~40 s
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
    assert by_number["12"]["product"]["detail"]["failedDeliveries"] == 0
    table_lines = [line.split()[0] for line in run.stdout.splitlines() if line[:1].isdigit()]
    assert set(table_lines) == FIGURES


def test_a_run_of_some_phases_keeps_the_other_figures_with_their_dates(tmp_path: Path) -> None:
    output = tmp_path / "results.json"

    def figure(number: str, p50: float) -> Figure:
        series = Series.of_samples("product", [p50])
        return Figure(number=number, title="t", unit="ms", product=series, floors=[series], method="m")

    write_results(output, [figure("3", 1.0), figure("10", 2.0)], {}, {})
    first = json.loads(output.read_text())
    write_results(output, [figure("1", 3.0), figure("3", 4.0)], {}, {})
    second = json.loads(output.read_text())

    assert [item["number"] for item in second["figures"]] == ["1", "3", "10"]
    by_number = {item["number"]: item for item in second["figures"]}
    assert by_number["3"]["product"]["values"]["p50"] == 4.0  # measured again: replaced
    assert by_number["10"]["measuredOn"] == first["date"]  # not measured again: kept as it was
    assert by_number["1"]["measuredOn"] == second["date"]
