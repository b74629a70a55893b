"""Run the benchmarks, print the table and write the results.

    python -m bench.run [--quick] [--jobs N] [--scale-jobs N] [--samples N] [--only PHASE,...] [--output PATH]

Phases, each with fresh worker processes: `start` (figure 1, no workers), `instant` (2, 4, 5; local provider
without delay), `overhead` (3; local provider taking 1.0 s), `memory` (6: large results, huge inputs), `scale`
(7), `ui` (8: the canvas in Chromium; needs `make web`), `canvas` (9: a canvas run beside the same jobs started
independently), `observability` (10: throughput with metrics and JSON logs on, against both off), `fairness` (11: a
tenant's single job while another tenant's burst is queued, against the same job on an idle system), `line` (11b:
a capped tenant's next job in line, from a job's end to its run; local provider taking 1.0 s), `storm` (12:
850 terminal webhooks, 100 in flight, while their jobs drain). A phase that
fails is reported with its error, its workflows are terminated, the next phase still runs, and the logs are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.canvas import canvas_run
from bench.capacity import hostile_input_memory, large_result_memory, scale, throughput
from bench.drive import MB, BenchConfig, warm_up
from bench.fairness import capped_line, fair_share
from bench.latency import canvas_live_latency, live_latency, orchestration_overhead, start_latency, webhook_latency
from bench.observability import observability_cost
from bench.report import Figure, details, figure_order, table, write_results
from bench.stack import BenchStack, Workers, bench_stack
from bench.storm import webhook_storm
from bench.ui import ui_latency

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"

FigureRun = Callable[[BenchStack, BenchConfig, Workers], Awaitable[Figure | list[Figure]]]


@dataclass(frozen=True)
class Phase:
    """Figures that share one set of worker processes, started with these setting overrides."""

    figures: tuple[FigureRun, ...]
    product_worker: bool = True
    floor_worker: bool = True
    warm_up: bool = True
    delayed_provider: bool = False


PHASES = {
    "start": Phase(figures=(start_latency,), product_worker=False, floor_worker=False, warm_up=False),
    "instant": Phase(figures=(webhook_latency, throughput)),
    "live": Phase(figures=(live_latency, canvas_live_latency), product_worker=False, floor_worker=False, warm_up=False),
    "overhead": Phase(figures=(orchestration_overhead,), delayed_provider=True),
    "memory": Phase(figures=(large_result_memory, hostile_input_memory), floor_worker=False, warm_up=False),
    "scale": Phase(figures=(scale,)),
    "ui": Phase(figures=(ui_latency,), product_worker=False, floor_worker=False, warm_up=False),
    "canvas": Phase(figures=(canvas_run,)),
    "observability": Phase(figures=(observability_cost,), product_worker=False, floor_worker=False, warm_up=False),
    "fairness": Phase(figures=(fair_share,)),
    "line": Phase(figures=(capped_line,), delayed_provider=True),
    "storm": Phase(figures=(webhook_storm,)),
}


@dataclass
class Outcome:
    figures: list[Figure] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, list[str], Path]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Benchmarks of the image job service.")
    parser.add_argument("--quick", action="store_true", help="tiny counts (the smoke test's size)")
    parser.add_argument("--jobs", type=int, help="concurrent jobs of the throughput figure (default 500)")
    parser.add_argument("--scale-jobs", type=int, help="jobs waiting at once in the scale figure (default 2000)")
    parser.add_argument("--samples", type=int, help="samples of each latency figure (default 200)")
    parser.add_argument("--only", help=f"comma-separated phases to run, of: {', '.join(PHASES)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results")
    args = parser.parse_args(argv)
    config = BenchConfig.quick() if args.quick else BenchConfig()
    overrides = {"jobs": args.jobs, "scale_jobs": args.scale_jobs, "latency_samples": args.samples}
    config = dataclasses.replace(config, **{key: value for key, value in overrides.items() if value is not None})
    phases = args.only.split(",") if args.only else list(PHASES)
    unknown = [name for name in phases if name not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    return config, phases, args.output


def progress(message: str, began: float) -> None:
    print(f"[{time.monotonic() - began:6.1f}s] {message}", flush=True)


async def run_phase(stack: BenchStack, config: BenchConfig, phase: Phase, outcome: Outcome, began: float) -> None:
    overrides = (
        {"LOCAL_PROVIDER_DELAY_MS": str(round(config.provider_seconds * 1000))} if phase.delayed_provider else {}
    )
    async with stack.workers(product=phase.product_worker, floor=phase.floor_worker, **overrides) as workers:
        if phase.warm_up and config.warmup:
            await warm_up(stack, config, workers)
        for measure in phase.figures:
            measured = await measure(stack, config, workers)
            new = measured if isinstance(measured, list) else [measured]
            outcome.figures.extend(new)
            for figure in new:
                progress(f"{figure.number} {figure.title}", began)


async def terminate_leftovers(stack: BenchStack) -> None:
    """A failed phase may leave workflows running; they must not load the next phase."""
    async for execution in stack.client.list_workflows("ExecutionStatus = 'Running'"):
        await stack.client.get_workflow_handle(execution.id).terminate("benchmark phase failed")


async def run(config: BenchConfig, phase_names: list[str]) -> Outcome:
    began = time.monotonic()
    outcome = Outcome()
    outcome.load_average["start"] = os.getloadavg()
    async with bench_stack(config.result_mb * MB) as stack:
        progress("stack up: PostgreSQL, Temporal dev server, API, file server", began)
        for name in phase_names:
            mark = time.monotonic()
            try:
                await run_phase(stack, config, PHASES[name], outcome, began)
            except Exception as error:
                stack.keep_logs = True
                outcome.failures.append({"phase": name, "error": f"{type(error).__name__}: {error}"})
                progress(f"phase {name} FAILED: {type(error).__name__}: {error}", began)
                await terminate_leftovers(stack)
            outcome.phase_seconds[name] = time.monotonic() - mark
            outcome.load_average[f"after {name}"] = os.getloadavg()
        if stack.keep_logs:
            outcome.failures.append({"phase": "-", "error": f"process logs kept in {stack.work_dir}"})
    outcome.phase_seconds["total"] = time.monotonic() - began
    outcome.figures.sort(key=lambda figure: figure_order(figure.number))
    return outcome


def main(argv: list[str] | None = None) -> None:
    config, phase_names, output = parse_args(argv)
    outcome = asyncio.run(run(config, phase_names))
    print()
    print(table(outcome.figures))
    print("\ndetails (milliseconds unless named otherwise; all in the JSON results):")
    print(details(outcome.figures))
    for failure in outcome.failures:
        print(f"FAILED {failure['phase']}: {failure['error']}")
    extra: dict[str, Any] = {
        "phases": phase_names,
        "phaseSeconds": outcome.phase_seconds,
        "loadAverage": outcome.load_average,
        "failures": outcome.failures,
    }
    write_results(output, outcome.figures, dataclasses.asdict(config), extra)
    print(f"\nresults written to {output}")
    if outcome.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
