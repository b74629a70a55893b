"""OutboundWebhookWorkflow: one event's delivery to one endpoint, attempt after attempt (workflow id = the
delivery's id, its `webhook-id`; a replay runs as `{id}-replay-...`).

Attempts follow the schedule (OUTBOUND_WEBHOOK_RETRY_SECONDS: Svix's 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h), and an endpoint's Retry-After (429, 503) makes the next wait longer, never shorter. The waits are durable
timers: a worker killed or deployed between two attempts loses nothing, and the next attempt goes out on time from
whichever worker is there. The job or canvas run the event is about never waits on any of this.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.outbound import OutboundActivities
    from models.payloads import DeliveryAttemptOutcome, DeliveryAttemptRequest, OutboundDeliveryInput
    from models.vocabulary import DeliveryStatus
    from workflows.policies import OUTBOUND_ATTEMPT


@workflow.defn
class OutboundWebhookWorkflow:
    @workflow.run
    async def run(self, delivery: OutboundDeliveryInput) -> str:
        """The delivery's end: `delivered` or `failed`."""
        asked_to_wait = 0.0
        for index, delay in enumerate(delivery.schedule):
            wait = max(delay, asked_to_wait)
            if wait > 0:
                await workflow.sleep(wait)
            following = delivery.schedule[index + 1] if index + 1 < len(delivery.schedule) else None
            request = DeliveryAttemptRequest(delivery.delivery_id, index + 1, following)
            try:
                outcome: DeliveryAttemptOutcome = await workflow.execute_activity_method(
                    OutboundActivities.attempt_delivery, request, **OUTBOUND_ATTEMPT
                )
            except ActivityError:
                # Our own trouble outlasted the attempt's retries (the database away for half an hour): this slot
                # of the schedule is lost, the next one is still worth trying.
                workflow.logger.warning("attempt %d of %s could not be made", index + 1, delivery.delivery_id)
                asked_to_wait = 0.0
                continue
            if outcome.done:
                return outcome.status
            asked_to_wait = outcome.retry_after or 0.0
        return str(DeliveryStatus.FAILED)
