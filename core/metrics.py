"""Prometheus metrics: each is declared once, here. The API serves them at GET /metrics, each worker on
WORKER_METRICS_PORT (with the Temporal SDK's own `temporal_*` metrics beside them, core/worker_metrics.py).

Names follow Prometheus' conventions (base units, `_total` for counters, `_seconds`), and labels never hold ids
or anything a caller chooses freely: a label value comes from a fixed set (the providers and models this process
validated, an outcome, an error class).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from models.errors import PROVIDER_TIMEOUT
from models.payloads import RunTransition
from models.results import Transitioned

WEBHOOKS = Counter(
    "imagejobs_webhooks",
    "Provider webhook deliveries by what became of them. `result`: accepted, duplicate, ignored (the job had"
    " ended), forged (the URL's token does not hold: nothing is stored), refused (authentic URL, but a bad"
    " signature, no such job or another job's provider job: kept in GET /v1/webhooks/refusals).",
    ["provider", "result"],
)
JOBS_STARTED = Counter(
    "imagejobs_jobs_started", "Image jobs recorded (a keyed repeat is not counted).", ["provider", "model"]
)
JOBS_FINISHED = Counter(
    "imagejobs_jobs_finished",
    "Image jobs ended; `outcome`: completed, failed or cancelled.",
    ["provider", "model", "outcome"],
)
# Image jobs take from a second (local) to several minutes (a busy asynchronous provider).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
JOB_DURATION = Histogram(
    "imagejobs_job_duration_seconds",
    "Time a job spent per phase: queued (created to running), generating (the provider's work and the download of"
    " its results), storing (thumbnails and uploads to storage), node_update, and total (created to its end,"
    " whatever the outcome).",
    ["provider", "model", "phase"],
    buckets=DURATION_BUCKETS,
)
PROVIDER_ERRORS = Counter(
    "imagejobs_provider_errors",
    "Failed provider calls (each attempt); `class`: rate_limited, server_error, timeout, network, content_policy,"
    " auth or invalid_request.",
    ["provider", "class"],
)
POLL_TIMEOUTS = Counter(
    "imagejobs_poll_timeouts", "Asynchronous jobs failed because the provider did not finish in time.", ["provider"]
)
STORAGE_UPLOADS = Counter("imagejobs_storage_uploads", "Result images put into storage, by `result`.", ["result"])
STORAGE_UPLOAD_BYTES = Counter("imagejobs_storage_upload_bytes", "Bytes of result images put into storage.")
COST_USD = Counter(
    "imagejobs_cost_usd", "What ended jobs cost (the provider's figure, else the catalog's).", ["provider", "model"]
)
HANDOFF_BACKLOG = Gauge(
    "imagejobs_handoff_backlog",
    "Work committed but not yet handed to Temporal, as the workers' sweep last counted it; `kind`: job_starts,"
    " canvas_run_starts, signals, deliveries.",
    ["kind"],
)
JOBS_WAITING_FOR_SLOT = Gauge(
    "imagejobs_jobs_waiting_for_slot",
    "Pending jobs waiting in their tenants' lines for a running slot (maxConcurrentJobs), all tenants together, as"
    " the workers' sweep last counted them (GET /v1/stats gives each tenant its own).",
)
REQUEST_SECONDS = Histogram(
    "imagejobs_http_request_duration_seconds",
    "Time from the moment this API process' application receives a request to the start of its answer; `route`"
    " is the route's template (`other` when no route took it), `status` the answer's.",
    ["method", "route", "status"],
    # The spec's webhook answer bound (500 ms) is a bucket edge.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SSE_CLIENTS = Gauge("imagejobs_sse_clients", "Event streams (SSE) this API process is serving now.")
BASE64_REFUSALS = Counter(
    "imagejobs_base64_refusals", "Requests refused for carrying image bytes (base64, data: URIs) in JSON."
)


# Phases the workflow times (RunTransition.timings' keys) and their label on JOB_DURATION.
TIMED_PHASES = {"queued": "queued", "generation": "generating", "storing": "storing", "nodeUpdate": "node_update"}


def job_started(provider: str, model: str) -> None:
    JOBS_STARTED.labels(provider=provider, model=model).inc()


def job_ended(ended: Transitioned, change: RunTransition) -> None:
    """Everything a job's end tells the metrics, counted once: by the process whose transition changed the run,
    never by a retry of it."""
    provider, model = ended.provider, ended.model
    JOBS_FINISHED.labels(provider=provider, model=model, outcome=str(change.status)).inc()
    JOB_DURATION.labels(provider=provider, model=model, phase="total").observe(ended.seconds_since_created)
    for key, phase in TIMED_PHASES.items():
        if change.timings and key in change.timings:
            JOB_DURATION.labels(provider=provider, model=model, phase=phase).observe(change.timings[key])
    if ended.cost_usd:
        COST_USD.labels(provider=provider, model=model).inc(ended.cost_usd)
    if change.error_code == PROVIDER_TIMEOUT:
        POLL_TIMEOUTS.labels(provider=provider).inc()
