"""ProviderCancelWorkflow: cancel a job's provider job when the job's own workflow is gone and cannot.

A job whose workflow was terminated from outside (or timed out, or was deleted) is ended by the sweep or by a
cancel (handoff/ends.py), but its provider job (a Replicate prediction, a task API's task) runs on and is billed.
This workflow runs the provider queue's `cancel_at_provider` for it, with the few retries a job's own cleanup gets
(workflow id: `{job id}-provider-cancel`, so asking twice cancels once).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from models.payloads import CancelAtProvider
    from workflows.image_job import provider_task_queue
    from workflows.policies import PROVIDER_CANCEL_STEP


@workflow.defn
class ProviderCancelWorkflow:
    @workflow.run
    async def run(self, request: CancelAtProvider) -> bool:
        """True once the provider took the cancel; False when it could not be made (logged), which ends it too: a
        provider job that has finished meanwhile has nothing left to cancel."""
        try:
            await workflow.execute_activity_method(
                GenerationActivities.cancel_at_provider,
                request,
                task_queue=provider_task_queue(workflow.info().task_queue, request.provider),
                **PROVIDER_CANCEL_STEP,
            )
        except ActivityError:
            workflow.logger.warning(
                "could not cancel %s job %s of job %s", request.provider, request.provider_job_id, request.job_id
            )
            return False
        return True
