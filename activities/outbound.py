"""One attempt of an outbound webhook: the event's body, signed, POSTed to the endpoint, and the answer recorded.

The body is `{type, timestamp, data}`: `data` is the job's ImageJobRecord or the canvas run's view as the API
shows them, read when the attempt is made (the subject has ended, so every attempt sends the same body), and
`timestamp` is when the event happened. URLs only, never image bytes. The endpoint's URL is checked against the
worker's own network before every attempt (an endpoint's DNS may move), and redirects are not followed.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.config import Settings
from core.db import transaction
from core.netguard import DownloadRefused, check_download_url
from core.webhook_signing import signed_headers
from models.payloads import DeliveryAttemptOutcome, DeliveryAttemptRequest
from models.schemas import CanvasRunView, ImageJobRecord
from models.tables import OutboundDelivery
from models.vocabulary import DeliveryStatus
from store import canvas_runs, outbound, runs
from store.outbound import Attempt

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT_SECONDS = 15.0
# The answers that ask us to come back later, with a Retry-After we honour.
COME_BACK_LATER = frozenset({429, 503})
MAX_RETRY_AFTER_SECONDS = 24 * 3600
ERROR_CHARS = 500


class OutboundActivities:
    """Outbound webhook attempts; the worker gives them its session factory, an HTTP client and its settings."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, settings: Settings) -> None:
        self.sessions = sessions
        self.http = http
        self.allowlist = list(settings.OUTBOUND_ALLOWLIST)

    @activity.defn
    async def attempt_delivery(self, request: DeliveryAttemptRequest) -> DeliveryAttemptOutcome:
        async with self.sessions() as session:
            found = await outbound.delivery_and_endpoint(session, delivery_id=request.delivery_id)
            body = await event_body(session, found[0]) if found else None
        if found is None or body is None:
            return DeliveryAttemptOutcome(done=True, status=DeliveryStatus.FAILED)  # deleted since: nothing to do
        delivery, endpoint = found
        if endpoint.disabled:
            async with transaction(self.sessions) as session:
                await outbound.give_up(
                    session, delivery_id=delivery.id, reason=f"the endpoint is disabled: {endpoint.disabled_reason}"
                )
            return DeliveryAttemptOutcome(done=True, status=DeliveryStatus.FAILED)
        now = datetime.now(UTC)
        headers = signed_headers(outbound.secrets_in_force(endpoint, now), delivery.id, now, body)
        answer, error = await self._post(endpoint.url, headers, body)
        attempt = Attempt(
            delivery_id=delivery.id,
            status_code=answer.status_code if answer is not None else None,
            error=error,
            delivered=answer is not None and answer.is_success,
            gone=answer is not None and answer.status_code == 410,
            next_attempt_at=None if request.next_delay is None else now + timedelta(seconds=request.next_delay),
        )
        async with transaction(self.sessions) as session:
            disabled = await outbound.record_attempt(session, attempt=attempt)
        if disabled:
            log.warning("webhook endpoint %s disabled: %s", endpoint.id, disabled)
        return outcome(attempt, answer, disabled)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[httpx.Response | None, str | None]:
        """The endpoint's answer, or None and why no answer came."""
        try:
            await check_download_url(url, self.allowlist, allowlist_setting="OUTBOUND_ALLOWLIST")
            answer = await self.http.post(
                url, content=body, headers=headers, timeout=ATTEMPT_TIMEOUT_SECONDS, follow_redirects=False
            )
        except DownloadRefused as error:
            return None, f"the URL is refused: {error}"
        except OSError as error:  # socket.gaierror: the host does not resolve now
            return None, f"no answer: the host cannot be resolved ({error})"[:ERROR_CHARS]
        except httpx.HTTPError as error:
            return None, f"no answer: {type(error).__name__}: {error}"[:ERROR_CHARS]
        if answer.is_success:
            return answer, None
        if answer.is_redirect:
            return answer, f"HTTP {answer.status_code}: redirects are not followed"
        return answer, f"HTTP {answer.status_code}: {answer.text[:200]}"[:ERROR_CHARS]


def outcome(attempt: Attempt, answer: httpx.Response | None, disabled: str | None) -> DeliveryAttemptOutcome:
    if attempt.delivered:
        return DeliveryAttemptOutcome(done=True, status=DeliveryStatus.DELIVERED)
    if disabled or attempt.next_attempt_at is None:
        return DeliveryAttemptOutcome(done=True, status=DeliveryStatus.FAILED)
    retry_after = retry_after_seconds(answer) if answer is not None else None
    return DeliveryAttemptOutcome(done=False, status=DeliveryStatus.PENDING, retry_after=retry_after)


def retry_after_seconds(answer: httpx.Response) -> float | None:
    """A 429's or 503's Retry-After in seconds (a number of seconds or an HTTP date), capped at a day."""
    if answer.status_code not in COME_BACK_LATER:
        return None
    value = answer.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER_SECONDS))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, min((moment - datetime.now(UTC)).total_seconds(), MAX_RETRY_AFTER_SECONDS))


async def event_body(session: AsyncSession, delivery: OutboundDelivery) -> bytes | None:
    """`{type, timestamp, data}` of the delivery's event, as bytes; None when its subject no longer exists."""
    data = await subject_view(session, delivery)
    if data is None:
        return None
    occurred = delivery.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": delivery.event_type, "timestamp": occurred, "data": data}).encode()


async def subject_view(session: AsyncSession, delivery: OutboundDelivery) -> dict[str, Any] | None:
    """The job's record or the canvas run's view, as the API shows it."""
    if delivery.event_type.startswith("canvas_run."):
        run = await canvas_runs.read_canvas_run_by_id(session, run_id=delivery.subject_id)
        return CanvasRunView.from_rows(*run).model_dump(mode="json", by_alias=True) if run else None
    job = await runs.get_run(session, job_id=delivery.subject_id)
    return ImageJobRecord.readable(job).model_dump(mode="json", by_alias=True, exclude_none=True) if job else None
