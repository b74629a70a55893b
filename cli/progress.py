"""Following a job on a terminal: the progress bar, its clock, and the outcome's exit code."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import httpx

from cli.client import EXIT_FAILED, EXIT_OK, POLL_INTERVAL_SECONDS, TERMINAL_STATUSES, EventsUnavailable, JobsApi


class ProgressDisplay:
    """A job's progress on stderr: one bar redrawn in place on a terminal, a plain line per change otherwise."""

    BAR_WIDTH = 30
    TICK_SECONDS = 1.0

    def __init__(self, job_id: str, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._interactive = self._stream.isatty()
        self._job_id = job_id
        self._started = time.monotonic()
        self._status = "pending"
        self._progress: float | None = None
        self._last_line: str | None = None
        self._drawing = threading.Lock()
        self.typical: float | None = None  # seconds this provider and model usually take

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """Meanwhile, on a terminal, redraw every second, so the elapsed time moves between the job's events (a
        provider may report nothing for a minute)."""
        if not self._interactive:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.TICK_SECONDS):
                with self._drawing:
                    self._draw()

        ticker = threading.Thread(target=tick, name="progress-clock", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def show(self, update: dict[str, Any]) -> None:
        """Take the `status` and `progress` of a job record or event (either may be missing) and redraw."""
        with self._drawing:
            self._take(update)
            self._draw()

    def _take(self, update: dict[str, Any]) -> None:
        status = update.get("status")
        if isinstance(status, str):
            self._status = status
        progress = update.get("progress")
        if isinstance(progress, int | float) and not isinstance(progress, bool):
            self._progress = min(max(float(progress), 0.0), 100.0)  # percent, as the API reports it
        if self._status == "completed":
            self._progress = 100.0

    def say(self, message: str) -> None:
        """A line of its own above the bar (a retry: "Attempt 1 of 3 failed: ...; trying again.")."""
        with self._drawing:
            prefix = "\r\x1b[K" if self._interactive and self._last_line is not None else ""
            self._stream.write(f"{prefix}{self._job_id}  {message}\n")
            self._stream.flush()
            if self._interactive and self._last_line is not None:
                self._draw()

    def finish(self) -> None:
        """End the in-place line so that what follows starts on a fresh one."""
        if self._interactive and self._last_line is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._last_line = None

    def _draw(self) -> None:
        percent = "  --" if self._progress is None else f"{self._progress:3.0f}%"
        if not self._interactive:
            line = f"{self._job_id}  {self._status}  {percent.strip()}"
            if line != self._last_line:
                self._stream.write(line + "\n")
                self._stream.flush()
                self._last_line = line
            return
        filled = round((self._progress or 0.0) / 100 * self.BAR_WIDTH)
        bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        usually = f" (usually ~{max(1, round(self.typical))}s)" if self.typical is not None else ""
        self._last_line = f"{self._job_id}  [{bar}] {percent}  {self._status:<9}  {elapsed:5.1f}s{usually}"
        # Carriage return and erase-to-end-of-line redraw the same terminal line.
        self._stream.write(f"\r{self._last_line}\x1b[K")
        self._stream.flush()


def follow_job(api: JobsApi, job_id: str, display: ProgressDisplay) -> dict[str, Any]:
    """Follow a job until it ends, over its SSE stream while the API offers one, polling otherwise.

    Returns the final job record, always read with a GET so the result does not depend on the event shape.
    """
    record = api.get_job(job_id)
    display.show(record)
    if record.get("status") in TERMINAL_STATUSES:
        return record
    display.typical = api.typical_seconds(str(record.get("provider")), str(record.get("model")))
    with display.ticking():
        return _follow_until_ended(api, job_id, display)


def _follow_until_ended(api: JobsApi, job_id: str, display: ProgressDisplay) -> dict[str, Any]:
    try:
        for event in api.job_events(job_id):
            if event.get("kind") == "log" and (event.get("data") or {}).get("moment") == "retry":
                display.say(str(event.get("message")))
            display.show(event)
            if event.get("status") in TERMINAL_STATUSES:
                break
    except (EventsUnavailable, httpx.HTTPError):
        pass  # no stream, or it broke off: polling below finishes the job either way
    while True:
        record = api.get_job(job_id)
        display.show(record)
        if record.get("status") in TERMINAL_STATUSES:
            return record
        time.sleep(POLL_INTERVAL_SECONDS)


def report_outcome(record: dict[str, Any]) -> int:
    """Print the image URLs of a completed job on stdout, or why it did not complete on stderr."""
    status = record.get("status")
    if status == "completed":
        urls = record.get("imageUrls") or ([record["imageUrl"]] if record.get("imageUrl") else [])
        for url in urls:
            print(url)
        return EXIT_OK
    code = record.get("errorCode") or status
    message = record.get("error") or f"the job ended {status}"
    print(f"error: {code}: {message}", file=sys.stderr)
    return EXIT_FAILED


def follow_and_report(api: JobsApi, job_id: str) -> int:
    display = ProgressDisplay(job_id)
    try:
        record = follow_job(api, job_id, display)
    except KeyboardInterrupt:
        display.finish()
        print(f"stopped following; the job goes on (imagejobs watch {job_id})", file=sys.stderr)
        return 130
    display.finish()
    return report_outcome(record)


def say(message: str) -> None:
    """A line for people, on stderr, so stdout keeps only the URLs."""
    print(message, file=sys.stderr, flush=True)
