"""What crosses Temporal boundaries: small dataclasses of ids, specs, keys and URLs, never bytes or rows.

Workflows import this module through `imports_passed_through`; it depends on the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from models.vocabulary import DeliveryStatus, JobStatus, NodeRunState, Priority

ProviderStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_PROVIDER_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class PromptSpec:
    """What to draw, independent of any provider; adapters map it onto their own parameters."""

    prompt: str
    # The spec's styleModifiers: each adapter applies them its own way (its style field, or appended to the prompt).
    style_modifiers: list[str] = field(default_factory=list)
    negative_prompt: str | None = None
    size: str | None = None
    aspect_ratio: str | None = None
    quality: str | None = None
    style: str | None = None
    seed: int | None = None
    n: int = 1
    # The spec's previousImage, an image to refine or start from: only its URL travels; the worker downloads it.
    previous_image: str | None = None
    strength: float | None = None


@dataclass
class PollingPlan:
    """How long an asynchronous job waits for a webhook before polling, and how it polls (seconds)."""

    webhook_grace: float = 10.0
    interval: float = 5.0
    timeout: float = 300.0
    # For providers that send webhooks, polling is only the fallback: each poll waits twice as long as the one
    # before (5, 10, 20 s ...), at most `max_interval`. Polling-only providers poll every `interval`.
    backoff: bool = False
    max_interval: float = 60.0

    def next_interval(self, polls_so_far: int) -> float:
        """How long after poll number `polls_so_far` (1 = the first) the next one comes."""
        if not self.backoff:
            return self.interval
        doubled: float = self.interval * 2.0 ** max(0, polls_so_far - 1)
        return min(doubled, max(self.max_interval, self.interval))


@dataclass
class ImageJobInput:
    """The workflow's argument. `canvas_id` is the canvas (the API's `workflowId`), `job_id` the workflow id."""

    job_id: str
    canvas_id: str
    node_id: str
    provider: str
    model: str
    spec: PromptSpec
    webhook_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    polling: PollingPlan = field(default_factory=PollingPlan)
    asynchronous: bool = False
    priority: Priority = Priority.NORMAL  # set on the workflow at start, inherited by its tasks
    # From the model catalog at validation: the job's price as asked (None: unknown), the deprecation warnings
    # it carries, and the `provider:model` an operator's MODEL_ALIASES mapped to this one.
    estimated_cost_usd: float | None = None
    warnings: list[str] = field(default_factory=list)
    aliased_from: str | None = None
    # The W3C traceparent of the request that made the job: its workflow's spans continue that trace.
    trace_parent: str | None = None
    # What the job is made from (planning/canvas_plan.inputs_hash), recorded on its run.
    content_hash: str | None = None

    @property
    def processor(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass
class ProviderCall:
    """One provider step of a job: which provider and model, what to draw, where the output goes."""

    job_id: str
    canvas_id: str
    node_id: str
    provider: str
    model: str
    spec: PromptSpec
    webhook_url: str | None = None


@dataclass
class StoredImage:
    """An image in object storage, with the URLs clients use to fetch it."""

    key: str
    url: str
    content_type: str
    size_bytes: int
    width: int | None = None
    height: int | None = None
    thumbnail_key: str | None = None
    thumbnail_url: str | None = None


@dataclass
class Provenance:
    """What the provider told us about how it made the images."""

    provider_job_id: str | None = None
    revised_prompt: str | None = None
    seed: int | None = None
    predict_time: float | None = None
    effective: dict[str, Any] = field(default_factory=dict)
    # What the provider billed, from its own figures (usage tokens, prediction time); None: the estimate stands.
    cost_usd: float | None = None


@dataclass
class GenerationResult:
    """The outcome of a provider step: stored images and provenance."""

    images: list[StoredImage]
    provenance: Provenance = field(default_factory=Provenance)
    # Of the step's time, how much went to storing results already received (thumbnails and uploads).
    storing_seconds: float = 0.0


@dataclass
class SubmitResult:
    """An asynchronous provider accepted the job; its own id is how we poll, cancel and match webhooks."""

    provider_job_id: str
    effective: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProviderEvent:
    """A provider's report on an asynchronous job, from a webhook (signal) or a poll."""

    status: ProviderStatus
    progress: float | None = None  # percent, 0-100
    output_urls: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    delivery_id: str | None = None
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_PROVIDER_STATUSES


@dataclass
class PollRequest:
    provider: str
    provider_job_id: str


@dataclass
class StoreOutputsRequest:
    """Download an asynchronous provider's result URLs into storage."""

    job_id: str
    canvas_id: str
    node_id: str
    provider: str
    urls: list[str]
    provenance: Provenance = field(default_factory=Provenance)


@dataclass
class RunTransition:
    """A change of a run's status, recorded with one deduplicated event."""

    job_id: str
    status: JobStatus
    error: str | None = None
    error_code: str | None = None
    result: GenerationResult | None = None
    provider_job_id: str | None = None
    timings: dict[str, float] | None = None


def cancellation(job_id: str) -> RunTransition:
    """A cancelled job's end, whoever records it: its workflow, or a cancel that finds the workflow gone."""
    return RunTransition(job_id=job_id, status=JobStatus.CANCELLED, error="Cancelled", error_code="cancelled")


@dataclass
class ProgressUpdate:
    job_id: str
    canvas_id: str
    node_id: str
    progress: float  # percent, 0-100
    message: str | None = None
    dedupe_key: str | None = None


@dataclass
class ProviderJobAttached:
    job_id: str
    provider_job_id: str
    effective: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeUpdate:
    """Fields merged into a canvas node's data, written only while `job_id` owns the node."""

    canvas_id: str
    node_id: str
    job_id: str
    status: JobStatus
    image_url: str | None = None
    image_urls: list[str] | None = None
    thumbnail_url: str | None = None
    error: str | None = None
    progress: float | None = None  # percent, 0-100
    cost_usd: float | None = None  # the provider's own figure for an ended job (see store/runs.py's cost rule)


@dataclass
class CancelAtProvider:
    provider: str
    provider_job_id: str
    # The job asking; a provider job recorded as another job's is not cancelled. None in older histories.
    job_id: str | None = None


@dataclass
class JobSnapshot:
    """The `status` query's answer: where the workflow is right now (queries are not recorded in histories)."""

    phase: JobStatus
    progress: float | None = None  # percent, 0-100
    provider_job_id: str | None = None
    error: str | None = None


@dataclass
class CachedImage:
    """What a node whose inputs did not change starts its downstream nodes from: its last job's image."""

    job_id: str
    image_url: str


@dataclass
class RunNodePlan:
    """One image node of a canvas run: the job it becomes, and the node whose image it refines in this run.

    `job.spec.previous_image` is already set when the image comes from outside the run (an uploaded image, or a
    node not in a partial run); otherwise the upstream node's result is put there when that node is done.
    `content_hash` covers the node's settings, provider, model and its input image (or upstream's hash)."""

    node_id: str
    job: ImageJobInput
    upstream: str | None
    content_hash: str
    # The node's current image, when the job that made it had these same inputs: nothing to generate.
    cached: CachedImage | None = None


@dataclass
class CanvasRunInput:
    """CanvasRunWorkflow's argument (the workflow id is `run_id`): the board's nodes as saved when it started."""

    run_id: str
    canvas_id: str
    nodes: list[RunNodePlan]
    force: bool = False
    max_parallel: int = 4
    priority: Priority = Priority.LOW
    trace_parent: str | None = None  # as ImageJobInput's


@dataclass
class NodeRunUpdate:
    """A node's new state in a canvas run, for its row and, when `node_reason` is set, for the node on the board."""

    run_id: str
    canvas_id: str
    node_id: str
    state: NodeRunState
    job_id: str | None = None
    image_url: str | None = None
    reason: str | None = None


@dataclass
class CanvasRunFinished:
    run_id: str
    status: JobStatus


@dataclass
class OutboundDeliveryInput:
    """OutboundWebhookWorkflow's argument: the delivery (its id is the `webhook-id`) and the delay before each
    attempt, in seconds (OUTBOUND_WEBHOOK_RETRY_SECONDS, or a single 0 for a replay)."""

    delivery_id: str
    schedule: list[float]


@dataclass
class DeliveryAttemptRequest:
    """One attempt; `next_delay` is the schedule's wait before the attempt after it (None: this is the last)."""

    delivery_id: str
    attempt: int
    next_delay: float | None


@dataclass
class DeliveryAttemptOutcome:
    """`done`: delivered, or nothing more to try (410, endpoint disabled or deleted); `retry_after`: the
    endpoint's own Retry-After (429, 503), which the next wait honours."""

    done: bool
    status: DeliveryStatus
    retry_after: float | None = None
