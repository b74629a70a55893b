"""Every line an activity logs carries its job's fields: a worker interceptor reads them from the activity's
input (ImageJobInput, ProviderCall, RunTransition, ... all name the job the same way)."""

from __future__ import annotations

from typing import Any

from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from core.logs import log_context

# Our fields and the attribute each input type names them by.
INPUT_FIELDS = {
    "jobId": "job_id",
    "workflowId": "canvas_id",
    "nodeId": "node_id",
    "provider": "provider",
    "model": "model",
}


def job_fields(value: Any) -> dict[str, str | None]:
    found = {name: getattr(value, attribute, None) for name, attribute in INPUT_FIELDS.items()}
    return {name: item for name, item in found.items() if isinstance(item, str)}


class JobLogContext(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _WithJobFields(next)


class _WithJobFields(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        with log_context(**job_fields(input.args[0] if input.args else None)):
            return await super().execute_activity(input)
