"""Traces: one trace from the HTTP request through the job's workflow to its activities and provider call, read
with the OpenTelemetry SDK's in-memory exporter, against real Temporal, PostgreSQL and the API over a socket."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.config import Settings
from core.logs import ContextFilter
from core.temporal import connect
from tests.fakes.otlp import otlp_collector
from tests.fixtures.drills import api_process, worker_process
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.helpers import eventually

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exported() -> Iterator[InMemorySpanExporter]:
    """The process' tracer provider, recording in memory (a process gets one provider; this module sets it)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER


def caller_traceparent() -> tuple[str, str, str]:
    """A W3C traceparent as a canvas app's backend would send it: (header, trace id, its span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def ancestry(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The names of the span's ancestors, nearest first, as far as this process recorded them."""
    names: list[str] = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        span = by_id[parent.span_id]
        names.append(span.name or "")
        parent = span.parent
    return names


async def test_one_trace_runs_from_the_request_through_the_workflow_to_the_provider_call(
    stack_settings: Settings, exported: InMemorySpanExporter
) -> None:
    # The endpoint is never reached: a provider installed first (the in-memory one) is kept.
    settings = make_settings(
        stack_settings, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", LOCAL_PROVIDER_DELAY_MS=0
    )
    traced_client = await connect(settings)  # with the SDK's tracing interceptor, for the workers too
    header, trace_id, caller_span = caller_traceparent()
    async with running_stack(settings, traced_client) as stack:
        answer = await stack.api.post(
            "/v1/jobs",
            json={"workflowId": "traced", "nodeId": "n1", "provider": "local", "promptSpec": {"basePrompt": "a fox"}},
            headers={"traceparent": header},
        )
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert job["traceId"] == trace_id
        done = await stack.wait(job["jobId"])
        assert done["status"] == "completed" and done["traceId"] == trace_id

    spans = [
        span for span in exported.get_finished_spans() if span.context and span.context.trace_id == int(trace_id, 16)
    ]
    by_id = {span.context.span_id: span for span in spans if span.context}
    by_name = {span.name: span for span in spans}
    server = by_name["POST /v1/jobs"]
    assert server.parent is not None and server.parent.span_id == int(caller_span, 16)
    assert ancestry(by_name["RunWorkflow:ImageJobWorkflow"], by_id)[-2:] == [
        "StartWorkflow:ImageJobWorkflow",
        "POST /v1/jobs",
    ]
    # The SDK's interceptor hangs a workflow's activity starts under the workflow's own start.
    assert ancestry(by_name["generate local"], by_id) == [
        "RunActivity:generate_image",
        "StartActivity:generate_image",
        "StartWorkflow:ImageJobWorkflow",
        "POST /v1/jobs",
    ]
    assert ancestry(by_name["store image"], by_id)[0] == "generate local"
    for step in ("create_run", "mark_running", "update_node", "complete_run"):
        assert "POST /v1/jobs" in ancestry(by_name[f"RunActivity:{step}"], by_id), step


async def test_without_tracing_the_callers_trace_id_is_still_kept_on_the_record(stack: Stack) -> None:
    header, trace_id, _ = caller_traceparent()
    body = {"workflowId": "untraced", "nodeId": "n1", "provider": "local", "promptSpec": {"basePrompt": "a fox"}}
    traced = await stack.api.post("/v1/jobs", json=body, headers={"traceparent": header})
    assert traced.json()["traceId"] == trace_id
    untraced = await stack.api.post("/v1/jobs", json={**body, "nodeId": "n2"})
    malformed = await stack.api.post("/v1/jobs", json={**body, "nodeId": "n3"}, headers={"traceparent": "00-zz-1-01"})
    assert "traceId" not in untraced.json() and "traceId" not in malformed.json()
    assert (await stack.wait(traced.json()["jobId"]))["traceId"] == trace_id


def test_a_line_logged_inside_a_span_carries_its_trace_id(exported: InMemorySpanExporter) -> None:
    record = logging.LogRecord("imagejobs", logging.INFO, __file__, 1, "stored", None, None)
    with trace.get_tracer(__name__).start_as_current_span("a step") as span:
        ContextFilter().filter(record)
    assert record.traceId == format(span.get_span_context().trace_id, "032x")


async def test_the_api_and_worker_processes_export_one_trace_over_otlp(stack_settings: Settings) -> None:
    header, trace_id, caller_span = caller_traceparent()
    body = {"workflowId": "exported", "nodeId": "n1", "provider": "local", "promptSpec": {"basePrompt": "a fox"}}
    environment = {"OTEL_BSP_SCHEDULE_DELAY": "100"}  # export every 0.1 s rather than every 5 s
    async with otlp_collector() as collector:
        settings = make_settings(stack_settings, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)

        async def exported_by_both() -> bool:
            names = {(span.service, span.name) for span in collector.of_trace(trace_id)}
            return {("imagejobs-api", "POST /v1/jobs"), ("imagejobs-worker", "generate local")} <= names

        async with api_process(settings, environment) as api, httpx.AsyncClient(base_url=api.base_url) as http:
            with worker_process(settings, environment):
                job = (await http.post("/v1/jobs", json=body, headers={"traceparent": header})).json()
                await eventually(exported_by_both, timeout=60, what="both processes' spans at the collector")
            assert (await http.get(f"/v1/jobs/{job['jobId']}")).json()["traceId"] == trace_id
    server = next(span for span in collector.of_trace(trace_id) if span.name == "POST /v1/jobs")
    assert server.parent_span_id == caller_span
