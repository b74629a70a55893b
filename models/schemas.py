"""The HTTP API's shapes: camelCase on the wire, validated strictly, with examples for /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from core.config import get_settings
from models.guards import ImageDataInJson, assert_no_image_data
from models.payloads import ImageJobInput, JobStatus, PromptSpec
from models.tables import Run, RunEvent, WorkflowNode

# Ids end up in storage keys and URLs, so they keep to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
MAX_SEED = 2**32 - 1
MAX_URL_CHARS = 2048


def _without_image_data(value: dict[str, Any]) -> dict[str, Any]:
    try:
        assert_no_image_data(value, what="this object")
    except ImageDataInJson as error:
        raise ValueError(str(error)) from None
    return value


# Free-form JSON from clients: small metadata, never image bytes.
JsonObject = Annotated[dict[str, Any], AfterValidator(_without_image_data)]


class CamelModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class RequestModel(CamelModel):
    """Requests refuse unknown fields, so a typo is an error and not a silently ignored option."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ImagePromptSpec(RequestModel):
    """What to draw. Providers map size, aspect ratio and quality onto the nearest values they allow."""

    prompt: str = Field(min_length=1, description="The text prompt.")
    negative_prompt: str | None = Field(default=None, max_length=10_000)
    size: str | None = Field(default=None, pattern=r"^\d{2,5}x\d{2,5}$", examples=["1024x1024"])
    aspect_ratio: str | None = Field(default=None, pattern=r"^\d{1,3}:\d{1,3}$", examples=["16:9"])
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] | None = None
    style: str | None = Field(default=None, max_length=64, description="Style modifier, e.g. vivid, natural, anime.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    n: int = Field(default=1, ge=1, le=10, description="Number of images.")
    input_image_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL of an image to start from (image-to-image, upscaling); the worker downloads it.",
        examples=["https://example.com/sketch.png"],
    )
    strength: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="With inputImageUrl: how far to move from the input image (0 keeps it, 1 ignores it).",
    )

    @field_validator("input_image_url")
    @classmethod
    def _input_image_url_is_http(cls, url: str | None) -> str | None:
        # The URL (never the bytes) is what travels; the worker's download guard checks where it points.
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("inputImageUrl must be an http or https URL with a host, e.g. https://example.com/a.png")
        return url

    @model_validator(mode="after")
    def _strength_needs_an_input_image(self) -> ImagePromptSpec:
        if self.strength is not None and self.input_image_url is None:
            raise ValueError("strength only applies to an input image; set inputImageUrl or remove strength")
        return self

    @field_validator("prompt")
    @classmethod
    def _prompt_within_limit(cls, prompt: str) -> str:
        limit = get_settings().MAX_PROMPT_CHARS
        if not prompt.strip():
            raise ValueError("prompt must not be blank")
        if len(prompt) > limit:
            raise ValueError(f"prompt is {len(prompt)} characters; the limit is {limit}")
        return prompt

    def to_payload(self) -> PromptSpec:
        return PromptSpec(**self.model_dump())

    @classmethod
    def from_payload(cls, spec: PromptSpec) -> ImagePromptSpec:
        return cls.model_validate(spec.__dict__)


class StartImageJobRequest(RequestModel):
    """Start an image job for one canvas node."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflowId": "canvas-42",
                    "nodeId": "node-1",
                    "provider": "local",
                    "model": "procedural",
                    "promptSpec": {"prompt": "a lighthouse at dusk", "size": "1024x1024"},
                }
            ]
        },
    )

    workflow_id: str = Field(pattern=ID_PATTERN, description="The canvas (React Flow board) id.")
    node_id: str = Field(pattern=ID_PATTERN, description="The canvas node that receives the image.")
    prompt_spec: ImagePromptSpec
    provider: str = Field(default="local", max_length=64)
    model: str | None = Field(default=None, max_length=200, description="Defaults to the provider's default model.")
    webhook_url: AnyHttpUrl | None = Field(
        default=None, description="Base URL providers call back (overrides APP_URL for this job's webhooks)."
    )
    metadata: JsonObject = Field(default_factory=dict, description="Small JSON kept with the job.")

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
        )


class ErrorBody(CamelModel):
    """Every error answer: a stable machine `code` and a human `message`."""

    code: str
    message: str
    details: Any | None = None


class ImageJobError(CamelModel):
    code: str
    message: str


class ImageJobRecord(CamelModel):
    """A job as clients see it. Image URLs are absolute."""

    job_id: str
    workflow_id: str
    node_id: str
    status: JobStatus
    provider: str
    model: str
    prompt_spec: dict[str, Any]
    progress: float | None = None
    image_url: str | None = None
    image_urls: list[str] = Field(default_factory=list)
    thumbnail_url: str | None = None
    provider_job_id: str | None = None
    revised_prompt: str | None = None
    seed: int | None = None
    predict_time: float | None = None
    effective: dict[str, Any] = Field(default_factory=dict, description="Parameters as the provider applied them.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent per stage.")
    error: ImageJobError | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_run(cls, run: Run) -> ImageJobRecord:
        provider, _, model = run.processor.partition(":")
        payload = run.payload or {}
        return cls(
            job_id=run.id,
            workflow_id=run.subject_id,
            node_id=run.node_id,
            status=run.status,
            provider=provider,
            model=model,
            prompt_spec=run.request.get("promptSpec", {}),
            progress=payload.get("progress"),
            image_url=payload.get("imageUrl"),
            image_urls=payload.get("imageUrls", []),
            thumbnail_url=payload.get("thumbnailUrl"),
            provider_job_id=run.provider_job_id,
            revised_prompt=payload.get("revisedPrompt"),
            seed=payload.get("seed"),
            predict_time=payload.get("predictTime"),
            effective=payload.get("effective", {}),
            timings=payload.get("timings", {}),
            error=ImageJobError(code=run.error_code or "failed", message=run.error) if run.error else None,
            metadata=run.request.get("metadata", {}),
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
        )


class JobPage(CamelModel):
    """One page of jobs, newest first; pass `nextCursor` back as `cursor` for the next page."""

    items: list[ImageJobRecord]
    next_cursor: str | None = None


class ImageProgressEvent(CamelModel):
    """One entry of a job's audit trail, as stored and as streamed over SSE."""

    id: int
    job_id: str
    kind: str
    ts: datetime
    status: JobStatus | None = None
    progress: float | None = None
    message: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_event(cls, event: RunEvent) -> ImageProgressEvent:
        payload = dict(event.payload or {})
        assert event.id is not None
        return cls(
            id=event.id,
            job_id=event.run_id,
            kind=event.kind,
            ts=event.ts,
            status=payload.pop("status", None),
            progress=payload.pop("progress", None),
            message=payload.pop("message", None),
            data=payload,
        )


class NodePosition(CamelModel):
    x: float = 0
    y: float = 0


class CanvasNode(CamelModel):
    """A React Flow node: `{id, type, position, data}`."""

    id: str
    type: str
    position: NodePosition
    data: dict[str, Any]

    @classmethod
    def from_row(cls, node: WorkflowNode) -> CanvasNode:
        return cls(id=node.id, type=node.node_type, position=NodePosition(**node.position), data=node.node_data)


class CanvasNodes(CamelModel):
    items: list[CanvasNode]
