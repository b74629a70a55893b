"""An OpenTelemetry collector's OTLP/HTTP trace receiver, over a real socket: it decodes each export (protobuf, as
the SDK's exporter sends it) and keeps the spans, each with the service that sent it."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.server import serve


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root


@dataclass
class Collector:
    spans: list[ReceivedSpan] = field(default_factory=list)
    endpoint: str = ""

    def app(self) -> FastAPI:
        app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

        @app.post("/v1/traces")
        async def export(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            self.spans.extend(received(ExportTraceServiceRequest.FromString(body)))
            answer = ExportTraceServiceResponse().SerializeToString()
            return Response(answer, media_type="application/x-protobuf")

        return app

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


def received(export: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in export.resource_spans:
        attributes = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            spans.extend(
                ReceivedSpan(
                    service=attributes.get("service.name", ""),
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                )
                for span in scope_spans.spans
            )
    return spans


@asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    collector = Collector()
    async with serve(collector.app()) as base_url:
        collector.endpoint = base_url
        yield collector
