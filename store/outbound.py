"""Every SQL statement about outbound webhooks: the app's endpoints, and each event's delivery to each of them.

An event is enqueued by the statement that ends its job or canvas run (`enqueue_sql`): one `outbound_deliveries` row
per enabled endpoint that takes the event, whose id is the event's `webhook-id`. An OutboundWebhookWorkflow then
makes the attempts (workflows/outbound_webhook.py), each recorded here (`record_attempt`), and the endpoint's
health with it: a success clears `failing_since`; an endpoint failing for ENDPOINT_FAILING_DAYS is disabled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.webhook_signing import new_secret
from models.tables import OutboundDelivery, WebhookEndpoint
from models.vocabulary import DeliveryStatus

# After a rotation the old secret keeps signing beside the new one this long.
ROTATION_OVERLAP = timedelta(hours=24)
# An endpoint whose every attempt has failed for this long is disabled.
ENDPOINT_FAILING_DAYS = 5
# Deliveries are kept this long for the log and replay; the workers' sweep prunes older ones.
RETENTION_DAYS = 30
ENDPOINT_LIST_LIMIT = 200


def new_endpoint_id() -> str:
    return "we_" + uuid.uuid4().hex


async def create_endpoint(
    session: AsyncSession, *, tenant_id: str, url: str, events: list[str] | None, description: str | None
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=new_endpoint_id(),
        tenant_id=tenant_id,
        url=url,
        events=events,
        description=description,
        secret=new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def list_endpoints(session: AsyncSession, *, tenant_id: str) -> list[WebhookEndpoint]:
    found = await session.execute(
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.tenant_id) == tenant_id)
        .order_by(col(WebhookEndpoint.created_at).desc())
        .limit(ENDPOINT_LIST_LIMIT)
    )
    return list(found.scalars())


async def get_endpoint(session: AsyncSession, *, endpoint_id: str) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, endpoint_id)


@dataclass(frozen=True)
class EndpointChange:
    """A PATCH: a field left None stays as it is; `events_given` says `events` was sent (None then means all)."""

    url: str | None = None
    events: list[str] | None = None
    events_given: bool = False
    disabled: bool | None = None
    description: str | None = None


async def update_endpoint(session: AsyncSession, *, endpoint: WebhookEndpoint, change: EndpointChange) -> None:
    if change.url is not None:
        endpoint.url = change.url
    if change.events_given:
        endpoint.events = change.events
    if change.description is not None:
        endpoint.description = change.description
    if change.disabled is not None and change.disabled != endpoint.disabled:
        endpoint.disabled = change.disabled
        endpoint.disabled_reason = "disabled through the API" if change.disabled else None
        endpoint.disabled_at = datetime.now(UTC) if change.disabled else None
        endpoint.failing_since = None
    endpoint.updated_at = datetime.now(UTC)
    await session.flush()


async def rotate_secret(session: AsyncSession, *, endpoint: WebhookEndpoint) -> None:
    """A new secret; the one it replaces signs beside it for ROTATION_OVERLAP."""
    now = datetime.now(UTC)
    endpoint.previous_secret, endpoint.previous_secret_until = endpoint.secret, now + ROTATION_OVERLAP
    endpoint.secret, endpoint.updated_at = new_secret(), now
    await session.flush()


def secrets_in_force(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The endpoint's secret, and the rotated-out one while it still signs."""
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        return [endpoint.secret, endpoint.previous_secret]
    return [endpoint.secret]


async def delete_endpoint(session: AsyncSession, *, endpoint_id: str) -> bool:
    deleted = await session.execute(
        delete(WebhookEndpoint).where(col(WebhookEndpoint.id) == endpoint_id).returning(col(WebhookEndpoint.id))
    )
    return deleted.first() is not None


def enqueue_sql(subjects: str) -> str:
    """The INSERT that enqueues :outbound_event about each row of `subjects` (a relation with `id` and
    `tenant_id`, such as a CTE of the statement it goes in), returning the new deliveries' ids. Nothing is added
    while :outbound_event is NULL, so a statement can enqueue only when it ends something."""
    return (
        "INSERT INTO outbound_deliveries (id, endpoint_id, event_type, subject_id)"
        " SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, CAST(:outbound_event AS text), s.id"
        f" FROM webhook_endpoints e JOIN {subjects} s ON e.tenant_id = s.tenant_id"
        " WHERE CAST(:outbound_event AS text) IS NOT NULL AND NOT e.disabled"
        "  AND (e.events IS NULL OR CAST(:outbound_event AS text) = ANY(e.events))"
        " ON CONFLICT (endpoint_id, event_type, subject_id) DO NOTHING RETURNING id"
    )


async def unstarted_for(session: AsyncSession, *, subject_id: str) -> list[str]:
    """The deliveries about `subject_id` whose workflow is still to start."""
    found = await session.execute(
        text("SELECT id FROM outbound_deliveries WHERE subject_id = :subject AND workflow_started_at IS NULL"),
        {"subject": subject_id},
    )
    return list(found.scalars())


async def unstarted(session: AsyncSession, *, older_than_seconds: float, limit: int) -> list[str]:
    """Deliveries enqueued over `older_than_seconds` ago whose workflow never started (the process that ended
    their job died first, or Temporal was down)."""
    found = await session.execute(
        select(OutboundDelivery.id)
        .where(col(OutboundDelivery.workflow_started_at).is_(None))
        .where(col(OutboundDelivery.created_at) < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds))
        .order_by(col(OutboundDelivery.created_at))
        .limit(limit)
    )
    return list(found.scalars())


async def mark_started(session: AsyncSession, *, delivery_id: str) -> None:
    await session.execute(
        text(
            "UPDATE outbound_deliveries SET workflow_started_at = COALESCE(workflow_started_at, now()) WHERE id = :id"
        ),
        {"id": delivery_id},
    )


async def delivery_and_endpoint(
    session: AsyncSession, *, delivery_id: str
) -> tuple[OutboundDelivery, WebhookEndpoint] | None:
    found = await session.execute(
        select(OutboundDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(OutboundDelivery.endpoint_id))
        .where(col(OutboundDelivery.id) == delivery_id)
    )
    row = found.first()
    return (row[0], row[1]) if row else None


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to. `status_code` is None when no answer came; `gone` is a 410."""

    delivery_id: str
    status_code: int | None
    error: str | None
    delivered: bool
    gone: bool = False
    # When the next attempt is due; None when there is none (the last attempt, or the endpoint is done with).
    next_attempt_at: datetime | None = None


async def record_attempt(session: AsyncSession, *, attempt: Attempt) -> str | None:
    """The attempt on its delivery, and on its endpoint's health. Returns why the endpoint was disabled now, if
    it was (a 410, or failing for ENDPOINT_FAILING_DAYS)."""
    if attempt.delivered:
        status = DeliveryStatus.DELIVERED
    elif attempt.next_attempt_at is None or attempt.gone:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.PENDING
    found = await session.execute(
        text(
            "UPDATE outbound_deliveries SET attempts = attempts + 1, status = :status, last_status_code = :code,"
            " last_error = :error, next_attempt_at = :next,"
            " delivered_at = CASE WHEN :delivered THEN now() ELSE delivered_at END"
            " WHERE id = :id RETURNING endpoint_id"
        ),
        {
            "id": attempt.delivery_id,
            "status": str(status),
            "code": attempt.status_code,
            "error": attempt.error,
            "next": None if status != DeliveryStatus.PENDING else attempt.next_attempt_at,
            "delivered": attempt.delivered,
        },
    )
    endpoint_id = found.scalar_one_or_none()
    if endpoint_id is None:
        return None
    return await _record_health(session, endpoint_id, attempt)


async def _record_health(session: AsyncSession, endpoint_id: str, attempt: Attempt) -> str | None:
    if attempt.delivered:
        await session.execute(
            text("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = :id"), {"id": endpoint_id}
        )
        return None
    reason = "the endpoint answered 410 Gone" if attempt.gone else None
    failing = await session.execute(
        text(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()) WHERE id = :id"
            " RETURNING failing_since"
        ),
        {"id": endpoint_id},
    )
    since = failing.scalar_one_or_none()
    if reason is None and since is not None and datetime.now(UTC) - since >= timedelta(days=ENDPOINT_FAILING_DAYS):
        reason = f"every attempt has failed since {since:%Y-%m-%d %H:%M} UTC ({ENDPOINT_FAILING_DAYS} days or more)"
    if reason is None:
        return None
    await session.execute(
        text(
            "UPDATE webhook_endpoints SET disabled = true, disabled_reason = :reason, disabled_at = now(),"
            " updated_at = now() WHERE id = :id AND NOT disabled"
        ),
        {"id": endpoint_id, "reason": reason},
    )
    return reason


async def give_up(session: AsyncSession, *, delivery_id: str, reason: str) -> None:
    """End a delivery without another attempt (its endpoint is disabled or gone)."""
    await session.execute(
        text(
            "UPDATE outbound_deliveries SET status = 'failed', last_error = :reason, next_attempt_at = NULL"
            " WHERE id = :id AND status = 'pending'"
        ),
        {"id": delivery_id, "reason": reason},
    )


async def list_deliveries(
    session: AsyncSession, *, endpoint_id: str, status: DeliveryStatus | None, limit: int
) -> list[OutboundDelivery]:
    """The endpoint's deliveries, newest first."""
    query = select(OutboundDelivery).where(col(OutboundDelivery.endpoint_id) == endpoint_id)
    if status is not None:
        query = query.where(col(OutboundDelivery.status) == str(status))
    found = await session.execute(
        query.order_by(col(OutboundDelivery.created_at).desc(), col(OutboundDelivery.id)).limit(limit)
    )
    return list(found.scalars())


async def reopen_for_replay(session: AsyncSession, *, delivery: OutboundDelivery) -> None:
    """A delivery sent again: pending until the replay's attempt is recorded."""
    delivery.status = str(DeliveryStatus.PENDING)
    delivery.next_attempt_at = datetime.now(UTC)
    await session.flush()


async def prune(session: AsyncSession) -> int:
    """Forget deliveries older than RETENTION_DAYS; returns how many went."""
    pruned = await session.execute(
        text(
            "DELETE FROM outbound_deliveries WHERE created_at < now() - make_interval(days => :days)"
            " AND status <> 'pending'"
        ),
        {"days": RETENTION_DAYS},
    )
    return int(getattr(pruned, "rowcount", 0) or 0)
