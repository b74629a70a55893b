"""The HTTP API's shapes: camelCase on the wire, validated strictly, with examples for /docs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from models.guards import MAX_JSON_DEPTH, assert_storable_json, json_depth
from models.payloads import CanvasRunInput, ImageJobInput, PromptSpec
from models.results import RunResult
from models.tables import (
    CanvasEdge,
    CanvasRun,
    CanvasRunNode,
    OutboundDelivery,
    Run,
    RunEvent,
    WebhookEndpoint,
    WebhookRefusal,
    WorkflowNode,
)
from models.tenancy import workflow_id_of
from models.vocabulary import (
    CANCELLED_ERROR,
    CANCELLED_ERROR_CODE,
    DeliveryStatus,
    EventKind,
    JobStatus,
    NodeRunState,
    NodeType,
    OutboundEvent,
    Priority,
    SpecStatus,
    spec_status,
)

# Ids end up in storage keys and URLs, so they keep to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
MAX_SEED = 2**32 - 1
MAX_URL_CHARS = 2048


def _without_image_data(value: dict[str, Any]) -> dict[str, Any]:
    assert_storable_json(value, what="this object")  # an ImageDataInJson is the ValueError pydantic reports
    return value


def _no_dot_segments(value: str) -> str:
    # Ids become path segments of storage keys, where "." and ".." mean something else.
    if ".." in value or set(value) == {"."}:
        raise ValueError("an id may not be '.' or contain '..'")
    return value


# Ids end up in storage keys and URLs, so they keep to a safe alphabet and make no relative path segments.
SafeId = Annotated[str, Field(pattern=ID_PATTERN), AfterValidator(_no_dot_segments)]

# Free-form JSON from clients: small, shallow metadata, never image bytes.
JsonObject = Annotated[dict[str, Any], AfterValidator(_without_image_data)]


class CamelModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class RequestModel(CamelModel):
    """Requests refuse unknown fields, so a typo is an error and not a silently ignored option."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


StyleModifier = Annotated[str, Field(min_length=1, max_length=200)]


class ImagePromptSpec(RequestModel):
    """What to draw: the spec's ImagePromptSpec, plus `style`, `n` and `strength`.

    Providers map size, aspect ratio and quality onto the nearest values they allow and report what they used in
    the job's `effective`.
    """

    # The Python name stays `prompt` (it is what Temporal histories of running jobs carry); the wire says basePrompt.
    prompt: str = Field(
        min_length=1,
        validation_alias=AliasChoices("basePrompt", "prompt"),
        serialization_alias="basePrompt",
        description="The text prompt (`prompt` is accepted as another name for it).",
        examples=["a lighthouse at dusk"],
    )
    style_modifiers: list[StyleModifier] = Field(
        default_factory=list,
        max_length=20,
        description="Style words; each provider applies them its best way (its own style field, or appended to "
        "the prompt) and says which in `effective.styleModifiers`.",
        examples=[["watercolor", "soft light"]],
    )
    size: str | None = Field(default=None, pattern=r"^\d{2,5}x\d{2,5}$", examples=["1024x1024"])
    aspect_ratio: str | None = Field(default=None, pattern=r"^\d{1,3}:\d{1,3}$", examples=["16:9"])
    quality: Literal["standard", "hd", "auto", "low", "medium", "high"] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, strict=True)
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    previous_image: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        validation_alias=AliasChoices("previousImage", "inputImageUrl"),
        serialization_alias="previousImage",
        description="The http(s) URL of an image to refine or start from; the worker downloads it. Only models "
        "that take an input image accept it (`GET /v1/providers`).",
        examples=["https://example.com/sketch.png"],
    )
    style: str | None = Field(default=None, max_length=64, description="A provider's own style, e.g. vivid, anime.")
    n: int = Field(default=1, ge=1, le=10, strict=True, description="Number of images.")
    strength: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="With previousImage: how far to move from it (0 keeps it, 1 ignores it).",
    )

    @field_validator("previous_image")
    @classmethod
    def _previous_image_is_http(cls, url: str | None) -> str | None:
        # The URL (never the bytes) is what travels; the worker's download guard checks where it points.
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("previousImage must be an http or https URL with a host, e.g. https://example.com/a.png")
        return url

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("basePrompt must not be blank")
        return prompt

    @model_validator(mode="after")
    def _strength_needs_an_input_image(self) -> ImagePromptSpec:
        if self.strength is not None and self.previous_image is None:
            raise ValueError("strength only applies to a previous image; set previousImage or remove strength")
        return self

    def to_payload(self) -> PromptSpec:
        return PromptSpec(**self.model_dump())

    @classmethod
    def from_payload(cls, spec: PromptSpec) -> ImagePromptSpec:
        return cls.model_validate(asdict(spec))


class StartImageJobRequest(RequestModel):
    """The spec's StartImageJobRequest: start an image job for one canvas node."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "nodeId": "node-1",
                    "workflowId": "canvas-42",
                    "promptSpec": {
                        "basePrompt": "a lighthouse at dusk",
                        "styleModifiers": ["watercolor"],
                        "size": "1024x1024",
                        "seed": 7,
                    },
                    "provider": "local",
                    "model": "procedural",
                    "metadata": {"requestedBy": "canvas"},
                }
            ]
        },
    )

    node_id: SafeId = Field(description="The React Flow node that receives the image.")
    workflow_id: SafeId = Field(description="The canvas (React Flow board) the node is on.")
    prompt_spec: ImagePromptSpec
    provider: str = Field(default="local", max_length=64)
    model: str | None = Field(default=None, max_length=200, description="Defaults to the provider's default model.")
    webhook_url: AnyHttpUrl | None = Field(
        default=None, description="Base URL providers call back (overrides APP_URL for this job's webhooks)."
    )
    metadata: JsonObject = Field(default_factory=dict, description="Small JSON kept with the job.")
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="How soon the job's tasks leave a backlogged queue: a person's Generate (high) before batch work.",
    )

    def to_job(self, *, job_id: str, model: str) -> ImageJobInput:
        return ImageJobInput(
            job_id=job_id,
            canvas_id=self.workflow_id,
            node_id=self.node_id,
            provider=self.provider,
            model=model,
            spec=self.prompt_spec.to_payload(),
            webhook_url=str(self.webhook_url) if self.webhook_url else None,
            metadata=self.metadata,
            priority=self.priority,
        )


class ErrorBody(CamelModel):
    """Every error answer: a stable machine `code` and a human `message`."""

    code: str
    message: str
    details: Any | None = None


class ImageJobRecord(CamelModel):
    """The spec's ImageJobRecord, and beside it what we add: error code, every image, thumbnail, progress,
    timings and provenance. Image URLs are absolute and never expire."""

    job_id: str = Field(description="Our job id (also the Temporal workflow id); the provider's is providerJobId.")
    node_id: str
    workflow_id: str = Field(description="The canvas the node is on.")
    provider: str
    model: str
    status: SpecStatus = Field(
        description="The spec's four: a cancelled job is `failed` with `errorCode` `Cancelled` (`GET /v1/jobs?status="
        "cancelled` still finds it)."
    )
    started_at: datetime = Field(description="When the job was created.")
    finished_at: datetime | None = None
    image_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: str | None = Field(default=None, description="What went wrong, in words a person can act on.")
    error_code: str | None = Field(default=None, description="A stable code for `error`, e.g. ContentPolicyViolation.")
    image_urls: list[str] = Field(default_factory=list)
    thumbnail_url: str | None = None
    progress: float | None = Field(default=None, description="Percent, 0-100.")
    prompt_spec: dict[str, Any]
    provider_job_id: str | None = None
    revised_prompt: str | None = None
    seed: int | None = None
    predict_time: float | None = None
    effective: dict[str, Any] = Field(default_factory=dict, description="Parameters as the provider applied them.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent per stage.")
    estimated_cost_usd: float | None = Field(
        default=None,
        description="USD when created: the catalog price at the effective size and quality, times n. Absent "
        "when the model's price is unknown.",
    )
    cost_usd: float | None = Field(
        default=None,
        description="USD when ended: the provider's own figure where it reports one (usage tokens, prediction "
        "time), else the estimate; 0 for a job that failed or was cancelled unbilled. Absent when unknown.",
    )
    warnings: list[str] = Field(
        default_factory=list, description="E.g. the model is deprecated: its shutdown date and replacement."
    )
    trace_id: str | None = Field(
        default=None,
        description="The OpenTelemetry trace the job's request, workflow, activities and provider calls belong to: "
        "the trace id of the caller's W3C `traceparent`, else of the API's own span when it traces.",
    )
    waiting_for_slot: bool = Field(
        default=False,
        description="A `pending` job its tenant's maxConcurrentJobs holds back: it waits in the tenant's line and "
        "starts as one of the tenant's running jobs ends.",
    )
    created_at: datetime
    unreadable: str | None = Field(
        default=None,
        description="Set when part of the stored record cannot be shown (a row older than today's limits); "
        "the job's ids and status are still right.",
    )

    @classmethod
    def readable(cls, run: Run) -> ImageJobRecord:
        """The record, or when its stored request or result cannot be shown, the part that can, saying so: one
        bad row must not break a page of jobs."""
        try:
            record = cls.from_run(run)
            for name, value in (("metadata", record.metadata), ("promptSpec", record.prompt_spec)):
                if json_depth(value) > MAX_JSON_DEPTH:
                    raise ValueError(f"its {name} nests deeper than {MAX_JSON_DEPTH} levels")
            return record
        except (ValueError, TypeError, KeyError) as error:  # pydantic's ValidationError is a ValueError
            reason = f"the stored record cannot be shown: {str(error).splitlines()[0][:200]}"
            return cls(**_run_identity(run), prompt_spec={}, unreadable=reason)

    @classmethod
    def from_run(cls, run: Run) -> ImageJobRecord:
        result = RunResult.from_json(run.payload)
        return cls(
            **_run_identity(run),
            image_url=result.image_url,
            metadata=run.request.get("metadata", {}),
            image_urls=result.image_urls,
            thumbnail_url=result.thumbnail_url,
            progress=result.progress,
            prompt_spec=run.request.get("promptSpec", {}),
            provider_job_id=run.provider_job_id,
            revised_prompt=result.revised_prompt,
            seed=result.seed,
            predict_time=result.predict_time,
            effective=result.effective | ({"aliasedFrom": result.aliased_from} if result.aliased_from else {}),
            timings=result.timings,
            warnings=result.warnings,
        )


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32 hex digits of a W3C traceparent's trace id (version-traceid-parentid-flags)."""
    parts = traceparent.split("-") if traceparent else []
    return parts[1] if len(parts) == 4 else None


def _run_identity(run: Run) -> dict[str, Any]:
    """The record fields read from the run's own columns, which are always readable."""
    cancelled = run.status == JobStatus.CANCELLED
    error = CANCELLED_ERROR if cancelled else run.error
    return {
        "job_id": run.id,
        "node_id": run.node_id,
        "workflow_id": workflow_id_of(run.canvas_id),
        "provider": run.provider,
        "model": run.model,
        "status": spec_status(run.status),
        "waiting_for_slot": run.status == JobStatus.PENDING and run.slot_wait_since is not None,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "error": error,
        "error_code": CANCELLED_ERROR_CODE if cancelled else (run.error_code or "failed") if error else None,
        "created_at": run.created_at,
        "estimated_cost_usd": run.estimated_cost_usd,
        "cost_usd": run.cost_usd,
        "trace_id": trace_id_of(run.trace_parent),
    }


class JobPage(CamelModel):
    """One page of jobs, newest first; pass `nextCursor` back as `cursor` for the next page."""

    items: list[ImageJobRecord]
    next_cursor: str | None = None


class StatusImage(BaseModel):
    url: str


class ImageJobStatus(BaseModel):
    """The spec's polling answer, in its own snake_case. A cancelled job reads `failed`, as on the record."""

    job_id: str
    status: SpecStatus
    progress: float | None = Field(default=None, description="Percent, 0-100.")
    images: list[StatusImage] = Field(default_factory=list)
    error: str | None = None

    @classmethod
    def from_record(cls, record: ImageJobRecord) -> ImageJobStatus:
        return cls(
            job_id=record.job_id,
            status=record.status,
            progress=record.progress,
            images=[StatusImage(url=url) for url in record.image_urls],
            error=record.error,
        )


class ImageProgressEvent(CamelModel):
    """The spec's ImageProgressEvent: one entry of a job's audit trail, as stored and as streamed over SSE.

    `kind` is the spec's `progress`, `log` or `error`. A moment of the job's life is a `log` event whose
    `data.moment` names it (`created`, `running`, `webhook`, `completed`); a cancellation is an `error` event with
    `data.moment` `cancelled`. Beside the spec's fields: `id` (the SSE event id, for Last-Event-ID) and the job
    `status` it reports, if any (the spec's four, as on the record).
    """

    id: int
    job_id: str
    timestamp: datetime
    kind: Literal["progress", "log", "error"]
    message: str
    progress: float | None = Field(default=None, description="Percent, 0-100.")
    data: dict[str, Any] = Field(default_factory=dict)
    status: SpecStatus | None = None

    @classmethod
    def from_event(cls, event: RunEvent) -> ImageProgressEvent:
        payload = dict(event.payload or {})
        assert event.id is not None
        stored = EventKind(event.kind)
        kind, moment = SPEC_EVENT_KINDS[stored]
        status = payload.pop("status", None)
        # Events recorded before messages were kept get a sentence made from their kind.
        message = payload.pop("message", None) or _fallback_message(stored, payload)
        return cls(
            id=event.id,
            job_id=event.run_id,
            timestamp=event.ts,
            kind=kind,
            message=CANCELLED_ERROR if stored == EventKind.CANCELLED else message,
            progress=payload.pop("progress", None),
            status=spec_status(status) if status else None,
            data=payload | ({"moment": moment} if moment else {}),
        )


# What each stored kind is in the spec's three, and the moment of the job's life it names (if it is one).
SPEC_EVENT_KINDS: dict[EventKind, tuple[Literal["progress", "log", "error"], str | None]] = {
    EventKind.PROGRESS: ("progress", None),
    EventKind.LOG: ("log", None),
    EventKind.ERROR: ("error", None),
    EventKind.CREATED: ("log", "created"),
    EventKind.STATUS: ("log", "running"),
    EventKind.WEBHOOK: ("log", "webhook"),
    EventKind.COMPLETED: ("log", "completed"),
    EventKind.CANCELLED: ("error", "cancelled"),
}


def _fallback_message(kind: EventKind, payload: dict[str, Any]) -> str:
    error = payload.get("error")
    if kind == EventKind.ERROR and isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if kind == EventKind.PROGRESS and isinstance(payload.get("progress"), int | float):
        return f"{payload['progress']:.0f}%"
    return kind.value.capitalize()


class NodePosition(CamelModel):
    x: float = 0
    y: float = 0


class CanvasNodes(CamelModel):
    items: list[BoardNode]


class WebhookRefusalView(CamelModel):
    """A webhook delivery the API refused: the job its URL named, the stable code and the reason."""

    id: int
    received_at: datetime
    provider: str
    job_id: str
    code: str = Field(description="invalid_webhook_signature, job_not_found or webhook_not_for_this_job")
    reason: str

    @classmethod
    def of(cls, refusal: WebhookRefusal) -> WebhookRefusalView:
        return cls(
            id=refusal.id or 0,
            received_at=refusal.received_at,
            provider=refusal.provider,
            job_id=refusal.job_id,
            code=refusal.code,
            reason=refusal.reason,
        )


# --- boards: React Flow's own object shape, as `toObject()` gives it ---------------------------------------------

MAX_BOARD_NODES = 1000
MAX_BOARD_EDGES = 2000
BoardId = Annotated[str, Field(pattern=ID_PATTERN), AfterValidator(_no_dot_segments)]


class Viewport(CamelModel):
    x: float = 0
    y: float = 0
    zoom: float = Field(default=1, gt=0, le=100)


class BoardNode(CamelModel):
    """A node as React Flow has it. Its other keys (measured, selected, width, ...) are the app's to recompute and
    are not kept. Job-owned `data` fields (imageUrl, status, progress, ...) are the job's: a save never changes them."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: BoardId
    type: str = Field(default=NodeType.IMAGE_GENERATION, max_length=64)
    position: NodePosition = Field(default_factory=NodePosition)
    data: JsonObject = Field(default_factory=dict)

    @classmethod
    def from_row(cls, node: WorkflowNode) -> BoardNode:
        """A stored node as it is (stored ids were checked when they came in, by the rules of their time)."""
        return cls.model_construct(
            id=node.id, type=node.node_type, position=NodePosition(**node.position), data=node.node_data
        )


class BoardEdge(CamelModel):
    """An edge as React Flow has it; between image nodes, the target refines the source's image."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: BoardId
    source: BoardId
    target: BoardId
    source_handle: str | None = Field(default=None, max_length=256)
    target_handle: str | None = Field(default=None, max_length=256)
    type: str | None = Field(default=None, max_length=64)
    data: JsonObject = Field(default_factory=dict)

    @classmethod
    def from_row(cls, edge: CanvasEdge) -> BoardEdge:
        return cls(
            id=edge.id,
            source=edge.source,
            target=edge.target,
            source_handle=edge.source_handle,
            target_handle=edge.target_handle,
            type=edge.edge_type,
            data=edge.edge_data,
        )


class BoardSave(RequestModel):
    """`PUT /v1/canvases/{workflowId}`: the whole board. Nodes missing from it are deleted, edges replaced."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    version: int | None = Field(
        default=None,
        ge=0,
        description="The board version this save was made from (as read); a board saved since answers 409"
        " `board_version_conflict`. Omitted: the save overwrites whatever is there.",
    )
    nodes: list[BoardNode] = Field(default_factory=list, max_length=MAX_BOARD_NODES)
    edges: list[BoardEdge] = Field(default_factory=list, max_length=MAX_BOARD_EDGES)
    viewport: Viewport = Field(default_factory=Viewport)

    @model_validator(mode="after")
    def _consistent(self) -> BoardSave:
        node_ids = [node.id for node in self.nodes]
        if len(set(node_ids)) != len(node_ids):
            raise ValueError("node ids must be unique")
        if len({edge.id for edge in self.edges}) != len(self.edges):
            raise ValueError("edge ids must be unique")
        known = set(node_ids)
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in known:
                    raise ValueError(f"edge {edge.id} names node {end!r}, which is not on the board")
        return self


class Board(CamelModel):
    """A board as React Flow restores it (`setNodes`, `setEdges`, `setViewport`), with its id, name and version."""

    id: str
    name: str
    version: int
    nodes: list[BoardNode]
    edges: list[BoardEdge]
    viewport: Viewport
    updated_at: datetime


class NewCanvas(RequestModel):
    name: str = Field(default="Untitled canvas", min_length=1, max_length=200)


class CanvasRename(RequestModel):
    """`PATCH /v1/canvases/{workflowId}`: the canvas' new name."""

    name: str = Field(min_length=1, max_length=200)


class CanvasSummary(CamelModel):
    """A line of the canvas list."""

    id: str
    name: str
    node_count: int
    updated_at: datetime
    implicit: bool = Field(
        default=False,
        description="Made by API jobs alone: never created or saved as a board (renaming it makes it a board).",
    )
    thumbnails: list[str] = Field(
        default_factory=list, description="Pictures of its most recently changed nodes (up to 4), newest first."
    )


class CanvasList(CamelModel):
    items: list[CanvasSummary]


class CanvasRunRequest(RequestModel):
    """`POST /v1/canvases/{workflowId}/runs`: which image nodes to run (all of them by default)."""

    node_ids: list[BoardId] | None = Field(default=None, max_length=MAX_BOARD_NODES, description="Only these nodes.")
    from_node_id: BoardId | None = Field(default=None, description="This node and everything downstream of it.")
    force: bool = Field(default=False, description="Generate even the nodes whose inputs have not changed.")
    priority: Priority = Field(default=Priority.LOW, description="Batch work by default; a person's Generate wins.")
    dry_run: bool = Field(
        default=False,
        description="Start nothing: answer 200 with what the run would generate, reuse and cost (CanvasRunPreview).",
    )


class CanvasRunPreviewNode(CamelModel):
    node_id: str
    state: Literal["pending", "cached"] = Field(description="`pending`: would be generated; `cached`: reused.")
    estimated_cost_usd: float | None = Field(default=None, description="What generating it would cost.")


class CanvasRunPreview(CamelModel):
    """What `POST .../runs` would do now (`dryRun: true`): nodes whose shown image was made from the inputs they
    have now are reused (`cached`), the others generated, unless `force`."""

    to_generate: int
    cached: int
    estimated_cost_usd: float | None = Field(
        default=None,
        description="USD for the nodes to generate, at catalog prices (0 when there are none); absent when the "
        "price of one of them is unknown.",
    )
    nodes: list[CanvasRunPreviewNode]

    @classmethod
    def of(cls, plan: CanvasRunInput) -> CanvasRunPreview:
        nodes = [
            CanvasRunPreviewNode(
                node_id=node.node_id,
                state="cached" if node.cached is not None and not plan.force else "pending",
                estimated_cost_usd=None if node.cached is not None and not plan.force else node.job.estimated_cost_usd,
            )
            for node in plan.nodes
        ]
        costs = [node.estimated_cost_usd for node in nodes if node.state == "pending"]
        known = [cost for cost in costs if cost is not None]
        return cls(
            to_generate=len(costs),
            cached=len(nodes) - len(costs),
            estimated_cost_usd=round(sum(known), 6) if len(known) == len(costs) else None,
            nodes=nodes,
        )


class CanvasRunNodeView(CamelModel):
    node_id: str
    state: NodeRunState
    upstream: str | None = Field(description="The node whose image this one refines in the run.")
    job_id: str | None
    image_url: str | None
    reason: str | None = Field(description="Why a node failed or was skipped.")
    started_at: datetime | None
    finished_at: datetime | None
    estimated_cost_usd: float | None = Field(default=None, description="The node's job's; see ImageJobRecord.")
    cost_usd: float | None = Field(default=None, description="The node's job's; see ImageJobRecord.")

    @classmethod
    def from_row(cls, node: CanvasRunNode, job: Run | None) -> CanvasRunNodeView:
        """A pending node whose job has begun is `running`, and began when its job did: the job's record says so
        (the run records outcomes)."""
        state = NodeRunState(node.state)
        if state == NodeRunState.PENDING and job is not None and job.status in (JobStatus.PENDING, JobStatus.RUNNING):
            state = NodeRunState.RUNNING
        return cls(
            node_id=node.node_id,
            state=state,
            upstream=node.upstream,
            job_id=node.job_id if job is not None else None,  # a skipped node's job never began
            image_url=node.image_url,
            reason=node.reason,
            started_at=node.started_at or (job.created_at if job is not None else None),
            finished_at=node.finished_at,
            estimated_cost_usd=job.estimated_cost_usd if job is not None else None,
            cost_usd=job.cost_usd if job is not None else None,
        )


class CanvasRunView(CamelModel):
    """A canvas run: its status (running, completed, failed or cancelled) and every node's state, in run order."""

    run_id: str
    workflow_id: str = Field(description="The canvas.")
    status: JobStatus
    priority: Priority
    forced: bool
    created_at: datetime
    finished_at: datetime | None
    nodes: list[CanvasRunNodeView]
    estimated_cost_usd: float | None = Field(
        default=None, description="The sum over the run's jobs that have an estimate; absent when none has."
    )
    cost_usd: float | None = Field(
        default=None, description="The sum over the run's jobs that have a cost so far; absent when none has."
    )

    @classmethod
    def from_rows(cls, run: CanvasRun, nodes: list[tuple[CanvasRunNode, Run | None]]) -> CanvasRunView:
        jobs = [job for _, job in nodes if job is not None]
        return cls(
            estimated_cost_usd=_sum_known(job.estimated_cost_usd for job in jobs),
            cost_usd=_sum_known(job.cost_usd for job in jobs),
            run_id=run.id,
            workflow_id=workflow_id_of(run.canvas_id),
            status=JobStatus(run.status),
            priority=Priority(run.priority),
            forced=run.forced,
            created_at=run.created_at,
            finished_at=run.finished_at,
            nodes=[CanvasRunNodeView.from_row(node, job) for node, job in nodes],
        )


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known), 6) if known else None


# --- Outbound webhooks -------------------------------------------------------------------------------------------


class WebhookEndpointCreate(RequestModel):
    """`POST /v1/webhook-endpoints`: where to tell your server of jobs and canvas runs ending."""

    url: str = Field(max_length=2000, examples=["https://app.example.com/hooks/images"])
    events: list[OutboundEvent] | None = Field(
        default=None, min_length=1, description="The event types to send; omitted: all of them."
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointUpdate(RequestModel):
    """`PATCH /v1/webhook-endpoints/{id}`: what is sent changes; what is left out stays (`events: null` is all)."""

    url: str | None = Field(default=None, max_length=2000)
    events: list[OutboundEvent] | None = Field(default=None, min_length=1)
    disabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointView(CamelModel):
    """An endpoint; its secret is shown only when it is made or rotated."""

    id: str
    url: str
    events: list[OutboundEvent] | None = Field(description="null: every event type.")
    description: str | None
    disabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled: by you, a 410, or five days of failures.")
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="The first failed attempt since its last success.")
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookEndpointView:
        return cls.model_validate(endpoint)


class WebhookEndpointWithSecret(WebhookEndpointView):
    secret: str = Field(description="`whsec_` and base64: verify our `webhook-signature` with it. Shown once.")

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookEndpointWithSecret:
        return cls.model_validate(endpoint)


class WebhookEndpointList(CamelModel):
    items: list[WebhookEndpointView]


class DeliveryView(CamelModel):
    """One event's delivery to one endpoint; `id` is the `webhook-id` every attempt carries."""

    id: str
    event_type: OutboundEvent
    subject_id: str = Field(description="The job id or canvas run id the event is about.")
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: OutboundDelivery) -> DeliveryView:
        return cls.model_validate(delivery)


class DeliveryList(CamelModel):
    items: list[DeliveryView]
