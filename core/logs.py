"""Logging shared by the API and the worker: one line per event, JSON with LOG_FORMAT=json, each line about a job
carrying the job's fields (`log_context`, `bind`), no traceback for an expected failure, no token ever."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from temporalio.exceptions import ApplicationError

from core.tracing import current_trace_id


class RateLimitedLog:
    """A warning at most once per `seconds`, saying how many like it were held back since the last one: for events
    a stranger can cause at any rate (forged webhooks), where a line each would flood the log."""

    def __init__(self, logger: logging.Logger, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._seconds = seconds
        self._clock = clock
        self._last: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log now, or count this one for the next line; True when it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._seconds:
            self._held_back += 1
            return False
        suffix = f" ({self._held_back} more like it since the last line)" if self._held_back else ""
        self._logger.warning(message + suffix, *args)
        self._last, self._held_back = now, 0
        return True


# --- Structured logs --------------------------------------------------------------------------------------------

# The fields a line about a job or a request carries, in the API's vocabulary (workflowId is the canvas).
CONTEXT_FIELDS = ("requestId", "jobId", "workflowId", "nodeId", "provider", "model")
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("imagejobs_log_context", default={})  # noqa: B039 (never mutated)
# Task tokens, signatures and other long opaque strings never reach a log line. A `/` ends a run, so that a
# URL's path (an image's key, a job id) stays readable while a long token in one of its segments does not.
_OPAQUE = re.compile(r"task[_ ]token\S*|[A-Za-z0-9+_=-]{64,}")
# Uvicorn's loggers keep their own handlers unless told otherwise; they then print text beside our JSON.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Lines logged inside carry these fields (in addition to those already bound)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{name: value for name, value in fields.items() if value}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: str | None) -> None:
    """Lines logged from here to the end of the current task (one request, one activity) carry these fields."""
    _CONTEXT.set({**_CONTEXT.get(), **{name: value for name, value in fields.items() if value}})


class ContextFilter(logging.Filter):
    """Puts the bound fields (and the current trace's id) on each record, reads the job from Temporal's own extras,
    and turns a failed attempt that failed the expected way (an ApplicationError: a provider's 429, a refusal) into
    one line with its error class instead of a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _CONTEXT.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        temporal = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
        if isinstance(temporal, dict) and temporal.get("workflow_type") == "ImageJobWorkflow":
            record.jobId = getattr(record, "jobId", None) or temporal.get("workflow_id")
        record.traceId = getattr(record, "traceId", None) or current_trace_id()
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ApplicationError):
            record.errorClass = error.type or type(error).__name__
            record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, and a traceback only for an
    unexpected error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _OPAQUE.sub("[redacted]", record.getMessage()),
        }
        for name in (*CONTEXT_FIELDS, "traceId", "errorClass"):
            value = getattr(record, name, None)
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = _OPAQUE.sub("[redacted]", self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The readable form `imagejobs dev` keeps: the usual line, then the job's fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        return _OPAQUE.sub("[redacted]", f"{text}  [{fields}]" if fields else text)


def configure_logging(log_format: str, level: str) -> None:
    """One handler on standard error for the whole process, uvicorn's loggers and Python warnings included.

    Like logging.basicConfig, it leaves a root logger that already has handlers alone: a process that embeds the
    app (or a test runner capturing logs) keeps its own configuration."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for chatty in ("pgserver", "alembic.runtime.plugins"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.captureWarnings(True)
