"""The one way the API, the worker and the CLI connect to Temporal, and the search attributes we rely on."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from core.config import Settings
from core.data_converter import DATA_CONVERTER
from core.tracing import temporal_interceptors

log = logging.getLogger(__name__)

CANVAS_ID = SearchAttributeKey.for_keyword("CanvasWorkflowId")
NODE_ID = SearchAttributeKey.for_keyword("NodeId")
PROVIDER = SearchAttributeKey.for_keyword("Provider")
IMAGE_MODEL = SearchAttributeKey.for_keyword("ImageModel")
TENANT = SearchAttributeKey.for_keyword("TenantId")
SEARCH_ATTRIBUTES = (CANVAS_ID, NODE_ID, PROVIDER, IMAGE_MODEL, TENANT)
SEARCH_ATTRIBUTE_NAMES = tuple(key.name for key in SEARCH_ATTRIBUTES)
# What every dev server we start (make dev, tests, bench) turns on: tenants' fair share of a backlogged task queue
# (deploy/temporal/dynamicconfig.yaml does the same for docker-compose). Fairness orders each partition of a queue
# on its own, and a poll reaches one partition, so a single-node server keeps one partition per queue: a tenant's
# task is then next for whichever worker polls, not only for one that happens to poll its partition.
# Before a new workflow task reaches that queue, the history service's transfer queue hands it over, and it reads
# new tasks at most 20 times a second by default: under load every new job then waited up to 50 ms, whatever its
# tenant, before fairness could order it (figure 11). Reads still happen only when tasks are written.
DEV_SERVER_DYNAMIC_CONFIG = (
    "matching.enableFairness=true",
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
    "history.transferProcessorMaxPollRPS=1000",
)


def dynamic_config_args(entries: tuple[str, ...] = DEV_SERVER_DYNAMIC_CONFIG) -> list[str]:
    """`temporal server start-dev` arguments setting these `name=value` dynamic config entries."""
    return [arg for entry in entries for arg in ("--dynamic-config-value", entry)]


def worker_runtime(sdk_metrics_port: int | None) -> Runtime:
    """The SDK's runtime for a worker: its core's own log lines forwarded into Python logging (so LOG_FORMAT
    applies to them), and its metrics, Prometheus-named (`_total`, seconds), on `sdk_metrics_port` when given."""
    forwarding = LogForwardingConfig(logger=logging.getLogger("temporalio.core"))
    logs = LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding)
    metrics = None
    if sdk_metrics_port is not None:
        address = f"127.0.0.1:{sdk_metrics_port}"
        metrics = PrometheusConfig(bind_address=address, counters_total_suffix=True, durations_as_seconds=True)
    return Runtime(telemetry=TelemetryConfig(logging=logs, metrics=metrics))


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client for TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (TLS and API key for Temporal Cloud); `runtime` carries
    the SDK's telemetry (a worker's metrics)."""
    return await Client.connect(
        settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        api_key=settings.TEMPORAL_API_KEY,
        tls=settings.TEMPORAL_TLS or bool(settings.TEMPORAL_API_KEY),
        runtime=runtime,
        interceptors=temporal_interceptors(settings),
        data_converter=DATA_CONVERTER,
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register our Keyword search attributes where the cluster lacks them (idempotent).

    Temporal Cloud manages attributes through its control plane; there a refusal is logged, not fatal.
    """
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = [name for name in SEARCH_ATTRIBUTE_NAMES if name not in existing.custom_attributes]
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes=dict.fromkeys(missing, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
            )
        )
    except Exception as error:  # the cluster may not let this client manage attributes
        log.warning("could not register search attributes %s: %s", missing, error)
