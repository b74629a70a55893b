"""Traces (OpenTelemetry): one trace from the HTTP request through the job's workflow to each activity and
provider call.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT is set: `install_tracing` then gives the process an SDK tracer
provider exporting over OTLP/HTTP (the exporter's other OTEL_* variables, such as OTEL_EXPORTER_OTLP_HEADERS, work
as usual), unless the process installed its own first (an embedding app, a test), which it keeps.

The API answers `POST /v1/jobs` before Temporal hears of the job (handoff/sweep.py), so the request's context travels
with the job as a W3C `traceparent` (`runs.trace_parent`, `ImageJobInput.trace_parent`): the workflow's start,
whenever and from whichever process it happens, continues the request's trace. A caller's own `traceparent` is
honoured, and kept even when this process does not trace, so a canvas app can find its request's trace by the
record's `traceId`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio.client import Interceptor

from core.config import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
# The spans this package makes itself (provider calls); the Temporal SDK and FastAPI name their own.
tracer = trace.get_tracer("imagejobs")


def tracing_enabled(settings: Settings) -> bool:
    return bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT)


def install_tracing(settings: Settings, service: str) -> None:
    """With tracing enabled, export this process' spans to OTEL_EXPORTER_OTLP_ENDPOINT (as `service`, unless
    OTEL_SERVICE_NAME says otherwise); a provider installed before is kept."""
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if not endpoint or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    # Imported here: the exporter's protobuf code is loaded only by processes that export.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME, when set, names the service instead.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)}))
    # The variable names the collector's base URL; the traces path is added as the OTLP/HTTP spec says.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    log.info("tracing: spans of %s exported to %s", service, endpoint)


def temporal_interceptors(settings: Settings) -> list[Interceptor]:
    """The Temporal client's interceptors: with tracing enabled, the SDK's tracing one, which puts the spans of
    workflows and activities into the traces of whoever started them (it applies to the client's workers too)."""
    if not tracing_enabled(settings):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def current_traceparent() -> str | None:
    """The current span's W3C traceparent, or None when there is no valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def valid_traceparent(headers: Mapping[str, str]) -> str | None:
    """The traceparent in these headers, re-written from its parsed form; None when absent or malformed."""
    carrier = {TRACEPARENT: headers[TRACEPARENT]} if TRACEPARENT in headers else {}
    span = trace.get_current_span(_PROPAGATOR.extract(carrier))
    if not span.get_span_context().is_valid:
        return None
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out, trace.set_span_in_context(span))
    return out.get(TRACEPARENT)


@contextmanager
def continuing(traceparent: str | None) -> Iterator[None]:
    """Spans started inside are children of `traceparent` (when given), wherever the current context is."""
    if not traceparent:
        yield
        return
    token = context.attach(_PROPAGATOR.extract({TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        context.detach(token)


def current_trace_id() -> str | None:
    """The current span's trace id in hex, for log lines; None outside a recorded span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
