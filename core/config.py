"""Settings, read once from the environment (names as in the README's settings table).

Every field has a safe local default so that `imagejobs dev` runs with no configuration at all;
production deployments set DATABASE_URL, TEMPORAL_ADDRESS, S3_* and the provider keys.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changethis", "changeme", "secret", "xxx"})

CommaList = Annotated[list[str], NoDecode]


def _is_delay(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False


def _named(*names: str) -> AliasChoices:
    """A setting read from the first of `names` that is set (the order is the documented precedence)."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """All configuration of the API, the worker and the CLI."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", populate_by_name=True)

    ENVIRONMENT: Literal["local", "production"] = "local"
    DATA_DIR: Path = Path(".data")

    DATABASE_URL: str | None = None
    DATABASE_POOL_SIZE: int = 10

    TEMPORAL_ADDRESS: str = "localhost:7233"
    TEMPORAL_NAMESPACE: str = "default"
    # Where people open the Temporal Web UI; the canvas links each job to its workflow page there.
    TEMPORAL_UI_URL: str | None = None
    TEMPORAL_API_KEY: str | None = None
    TEMPORAL_TLS: bool = False
    TASK_QUEUE: str = "image-jobs"

    APP_URL: str | None = None
    # The keys of the `default` tenant; with ADMIN_API_KEY set, tenants get their own keys too (docs/tenants.md).
    API_KEYS: CommaList = Field(default_factory=list)
    # Turns authentication on and guards the tenant and key admin routes (/v1/tenants).
    ADMIN_API_KEY: str | None = None
    # Each tenant's limits unless it sets its own (PATCH /v1/tenants/{id}); unset means no limit.
    TENANT_STARTS_PER_MINUTE: int | None = Field(default=None, ge=1)
    TENANT_MAX_CONCURRENT_JOBS: int | None = Field(default=None, ge=1)
    TENANT_BUDGET_USD_PER_DAY: float | None = Field(default=None, ge=0)
    # The longest life a canvas token may ask for (POST /v1/canvas-tokens).
    CANVAS_TOKEN_MAX_SECONDS: int = Field(default=86_400, ge=1)
    CORS_ORIGINS: CommaList = Field(default_factory=list)
    WEBHOOK_SECRET: str = "local-development-webhook-secret"
    REPLICATE_WEBHOOK_SECRET: str | None = None
    MAX_WEBHOOK_BYTES: int = 1_000_000
    # Webhooks one API process handles at once; beyond that it answers 503 with Retry-After at once, so a storm
    # is retried by the providers instead of queueing until their clients time out.
    WEBHOOK_MAX_IN_FLIGHT: int = Field(default=200, ge=1)
    MAX_REQUEST_BYTES: int = 1_000_000

    STORAGE_BACKEND: Literal["auto", "local", "s3"] = "auto"
    LOCAL_STORAGE_DIR: Path | None = None
    # Our S3_* names first, then the spec's names (R2_* and the AWS alternative's S3_BUCKET_NAME, AWS_REGION).
    S3_BUCKET: str | None = Field(
        default=None, validation_alias=_named("S3_BUCKET", "R2_BUCKET_NAME", "S3_BUCKET_NAME")
    )
    S3_ENDPOINT_URL: str | None = Field(default=None, validation_alias=_named("S3_ENDPOINT_URL", "R2_ENDPOINT"))
    S3_REGION: str = Field(default="auto", validation_alias=_named("S3_REGION", "AWS_REGION"))
    S3_PUBLIC_BASE_URL: str | None = Field(default=None, validation_alias=_named("S3_PUBLIC_BASE_URL", "R2_PUBLIC_URL"))
    S3_PRESIGN_SECONDS: int = 3600
    S3_PART_BYTES: int = 8 * 1024 * 1024
    AWS_ACCESS_KEY_ID: str | None = None
    AWS_SECRET_ACCESS_KEY: str | None = None
    R2_ACCOUNT_ID: str | None = None
    R2_ACCESS_KEY_ID: str | None = None
    R2_SECRET_ACCESS_KEY: str | None = None

    MAX_IMAGE_BYTES: int = 100 * 1024 * 1024
    # Every image taken in (input, result, upload) is measured from its header and refused past this many pixels,
    # before anything decodes it (core/images.py). 8192x8192: above any model's output today.
    MAX_IMAGE_PIXELS: int = Field(default=8192 * 8192, ge=1)
    DOWNLOAD_ALLOWLIST: CommaList = Field(default_factory=list)
    THUMBNAIL_PX: int = 256
    THUMBNAIL_MAX_PIXELS: int = 50_000_000
    THUMBNAIL_IN_PROCESS_MAX_PIXELS: int = 4_194_304
    THUMBNAIL_MAX_CHILD_PROCESSES: int = Field(default=2, ge=1)

    MAX_PROMPT_CHARS: int = 32_000
    LOCAL_PROVIDER_DELAY_MS: int = 1500
    PROVIDER_TIMEOUT_SECONDS: float = 120.0
    WEBHOOK_GRACE_SECONDS: float = 10.0
    POLL_INTERVAL_SECONDS: float = 5.0
    POLL_TIMEOUT_SECONDS: float = 300.0
    # The workers' sweep (handoff/sweep.py): every SWEEP_INTERVAL_SECONDS it starts the runs and sends the webhook
    # signals an API process committed over HANDOFF_GRACE_SECONDS ago and did not hand off to Temporal.
    SWEEP_INTERVAL_SECONDS: float = Field(default=5.0, gt=0)
    # `json`: every line the API and the worker print is one JSON object (core/logs.py); `text` for people.
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # An OpenTelemetry collector's OTLP/HTTP base URL (e.g. http://localhost:4318): traces on (core/tracing.py).
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    # Workflow tasks (and the database steps they run as local activities) one worker takes at once. Kept small, so
    # a backlog waits in Temporal's task queue, where tenants get their fair share, rather than in the worker's
    # own queue, where it is first come, first served; these steps are short and CPU-bound, so more would not
    # run faster: two (one running while the other waits on PostgreSQL) measured more jobs per second and less CPU
    # per job than four (figure 4), and a fairer share (figure 11). Provider calls have their own queues and slots.
    WORKER_MAX_CONCURRENT_WORKFLOW_TASKS: int = Field(default=2, ge=2)
    # Temporal's workflow sandbox runs each workflow's module afresh for every workflow and guards every step: about
    # a sixth of a worker's CPU per job (figure 4). What it catches, workflow code that is not deterministic, is a
    # property of the code, not of a deployment: the test suite runs every workflow in the sandbox
    # (tests/fixtures/stack.py) and replays the recorded histories in it, so deployments run without it.
    WORKFLOW_SANDBOX: bool = False
    # Where a worker serves its Prometheus metrics (ours and the Temporal SDK's); unset: not served.
    WORKER_METRICS_PORT: int | None = Field(default=None, ge=1, le=65535)
    WORKER_METRICS_HOST: str = "0.0.0.0"
    HANDOFF_GRACE_SECONDS: float = Field(default=15.0, ge=0)
    # The sweep deletes the files of a job that failed or was cancelled this long ago, and what a killed write
    # left unfinished once untouched this long (handoff/orphan_files.py).
    ORPHAN_FILES_GRACE_SECONDS: float = Field(default=3600.0, ge=0)
    # The sweep asks Temporal about each unfinished job's workflow once this often (from its start), and ends the
    # job whose workflow stopped without it: terminated from the Temporal UI or CLI, timed out, deleted
    # (handoff/ends.py). One DescribeWorkflowExecution per unfinished job per period: 2,000 jobs waiting on
    # webhooks cost Temporal about three a second at the default.
    WORKFLOW_CHECK_SECONDS: float = Field(default=600.0, gt=0)

    # The model catalog (providers/catalog.toml): an operator's own TOML file of entries that add to or replace
    # the shipped ones; old model ids mapped on purpose (`openai:dall-e-3=openai:gpt-image-2.5-sunburst,...`);
    # how often each process reads again which models the providers list (0: only the catalog decides).
    MODEL_CATALOG_FILE: Path | None = None
    MODEL_ALIASES: str = ""
    MODEL_DISCOVERY_INTERVAL_SECONDS: float = Field(default=6 * 3600.0, ge=0)
    # The most the day's jobs may cost, in USD (UTC day; unset: no limit). See store/budget.py.
    BUDGET_USD_PER_DAY: float | None = Field(default=None, ge=0)

    OPENAI_API_KEY: str | None = None
    OPENAI_BASE_URL: str = "https://api.openai.com/v1"
    OPENAI_RATE_PER_MINUTE: float = 50
    GOOGLE_API_KEY: str | None = None
    GOOGLE_BASE_URL: str = "https://generativelanguage.googleapis.com"
    GOOGLE_VERTEX_PROJECT: str | None = None
    GOOGLE_VERTEX_LOCATION: str = "us-central1"
    GOOGLE_VERTEX_TOKEN: str | None = None
    GOOGLE_VERTEX_BASE_URL: str | None = None
    GOOGLE_RATE_PER_MINUTE: float = 60
    STABILITY_API_KEY: str | None = None
    STABILITY_BASE_URL: str = "https://api.stability.ai"
    STABILITY_RATE_PER_MINUTE: float = 600
    MIDJOURNEY_API_KEY: str | None = None
    MIDJOURNEY_BASE_URL: str | None = None
    MIDJOURNEY_RATE_PER_MINUTE: float = 60
    REPLICATE_API_TOKEN: str | None = None
    REPLICATE_BASE_URL: str = "https://api.replicate.com/v1"
    REPLICATE_RATE_PER_MINUTE: float = 600
    CUSTOM_PROVIDER_URL: str | None = None
    CUSTOM_PROVIDER_API_KEY: str | None = None
    CUSTOM_PROVIDER_WEBHOOK_SECRET: str | None = None
    CUSTOM_PROVIDER_MODELS: CommaList = Field(default_factory=lambda: ["default"])
    CUSTOM_PROVIDER_RATE_PER_MINUTE: float | None = None
    POLLINATIONS_TOKEN: str | None = None
    POLLINATIONS_BASE_URL: str = "https://image.pollinations.ai"
    POLLINATIONS_ENABLED: bool = True
    POLLINATIONS_RATE_PER_MINUTE: float = 12
    LOCAL_RATE_PER_MINUTE: float | None = None
    # Image jobs one canvas run keeps going at once (independent branches run side by side up to this).
    CANVAS_RUN_MAX_PARALLEL: int = Field(default=16, ge=1, le=100)

    # Outbound webhooks (store/outbound.py): the delay before each attempt, in seconds (Svix's schedule), and the
    # hosts an endpoint may name although they are private (`imagejobs dev` sets loopback).
    OUTBOUND_WEBHOOK_RETRY_SECONDS: CommaList = Field(
        default_factory=lambda: ["0", "5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
    OUTBOUND_ALLOWLIST: CommaList = Field(default_factory=list)

    @field_validator(
        "API_KEYS",
        "CORS_ORIGINS",
        "DOWNLOAD_ALLOWLIST",
        "CUSTOM_PROVIDER_MODELS",
        "OUTBOUND_WEBHOOK_RETRY_SECONDS",
        "OUTBOUND_ALLOWLIST",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("MODEL_ALIASES")
    @classmethod
    def _check_aliases(cls, value: str) -> str:
        parse_model_aliases(value)
        return value

    @property
    def model_aliases(self) -> dict[tuple[str, str], tuple[str, str]]:
        return parse_model_aliases(self.MODEL_ALIASES)

    @field_validator("OUTBOUND_WEBHOOK_RETRY_SECONDS")
    @classmethod
    def _check_schedule(cls, delays: list[str]) -> list[str]:
        if not delays or any(not _is_delay(delay) for delay in delays):
            raise ValueError("takes one or more delays in seconds, e.g. 0,5,300")
        return delays

    @property
    def outbound_retry_schedule(self) -> list[float]:
        """The delay before each outbound webhook attempt, in seconds."""
        return [float(delay) for delay in self.OUTBOUND_WEBHOOK_RETRY_SECONDS]

    @field_validator("DOWNLOAD_ALLOWLIST", "OUTBOUND_ALLOWLIST")
    @classmethod
    def _check_allowlist(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)
        return entries

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.ENVIRONMENT == "production":
            for name in ("WEBHOOK_SECRET",):
                value = getattr(self, name)
                if value.lower() in PLACEHOLDER_SECRETS or value.startswith("local-development"):
                    raise ValueError(f"{name} must be set to a real secret in production")
        return self

    @property
    def authentication_on(self) -> bool:
        """Whether requests need a key or a canvas token: ADMIN_API_KEY or API_KEYS is set."""
        return bool(self.ADMIN_API_KEY or self.API_KEYS)

    @property
    def storage_backend(self) -> Literal["local", "s3"]:
        """`auto` means S3 when a bucket is configured, the local directory otherwise."""
        if self.STORAGE_BACKEND != "auto":
            return self.STORAGE_BACKEND
        return "s3" if self.S3_BUCKET else "local"

    @property
    def local_storage_dir(self) -> Path:
        return self.LOCAL_STORAGE_DIR or self.DATA_DIR / "files"

    @property
    def s3_endpoint_url(self) -> str | None:
        if self.S3_ENDPOINT_URL:
            return self.S3_ENDPOINT_URL
        if self.R2_ACCOUNT_ID:
            return f"https://{self.R2_ACCOUNT_ID}.r2.cloudflarestorage.com"
        return None

    @property
    def s3_credentials(self) -> tuple[str | None, str | None]:
        if self.R2_ACCESS_KEY_ID:
            return self.R2_ACCESS_KEY_ID, self.R2_SECRET_ACCESS_KEY
        return self.AWS_ACCESS_KEY_ID, self.AWS_SECRET_ACCESS_KEY

    @property
    def app_url(self) -> str:
        return (self.APP_URL or "http://127.0.0.1:8000").rstrip("/")

    def require_database_url(self) -> str:
        if not self.DATABASE_URL:
            raise RuntimeError("DATABASE_URL is not set (imagejobs dev sets it for the embedded PostgreSQL)")
        return self.DATABASE_URL


# Prefixes of our settings: a variable with one of them that is not a setting is most likely a typo of one. Shared
# prefixes are left out: AWS_*, and OTEL_*, whose other variables (OTEL_SERVICE_NAME, ...) the OpenTelemetry SDK reads.
_OWN_PREFIXES = frozenset(name.split("_", 1)[0] for name in Settings.model_fields) - {
    "AWS",
    "API",
    "MAX",
    "LOCAL",
    "OTEL",
}


def parse_model_aliases(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """`MODEL_ALIASES`: comma-separated `provider:model=provider:model` pairs, old id to the one to call."""
    aliases: dict[tuple[str, str], tuple[str, str]] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        old, sep, new = pair.partition("=")
        old_provider, _, old_model = old.strip().partition(":")
        new_provider, _, new_model = new.strip().partition(":")
        if not (sep and old_provider and old_model and new_provider and new_model):
            raise ValueError(f"{pair!r} is not provider:model=provider:model")
        aliases[(old_provider, old_model)] = (new_provider, new_model)
    return aliases


def setting_names() -> set[str]:
    """Every environment variable a setting is read from."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name)
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
    return names


def lookalike_settings(environ: Mapping[str, str]) -> list[str]:
    """Warnings for variables that look like settings but are not one (`OPENAI_KEY`), so they are not lost quietly."""
    known = setting_names()
    warnings = []
    for variable in sorted(environ):
        if variable in known or variable.split("_", 1)[0] not in _OWN_PREFIXES:
            continue
        guess = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]}?" if guess else "; the README's settings table lists them all"
        warnings.append(f"{variable} is set but is not a setting of this service{hint}")
    return warnings


def warn_about_lookalikes() -> None:
    """Log a warning for each variable of this process's environment that looks like a setting but is none."""
    for warning in lookalike_settings(os.environ):
        logging.getLogger(__name__).warning(warning)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache after changing the environment."""
    return Settings()
