"""ImageJobWorkflow alone, on the time-skipping test server, with its activities replaced by fakes.

Covers the asynchronous paths whose timing matters (webhook grace, polling cadence, late and duplicate
events) and replays every recorded history, so a change that breaks determinism fails here. Histories in
tests/histories/ were recorded by earlier versions of the workflows (ImageJobWorkflow, and a CanvasRunWorkflow whose
nodes completed, failed and were skipped): jobs and runs still going when a worker is upgraded must replay on the
new code.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from models.payloads import (
    CancelAtProvider,
    GenerationResult,
    ImageJobInput,
    NodeUpdate,
    PollingPlan,
    PollRequest,
    ProgressUpdate,
    Provenance,
    ProviderCall,
    ProviderEvent,
    ProviderJobAttached,
    RunTransition,
    StoredImage,
    StoreOutputsRequest,
    SubmitResult,
)
from tests.helpers import eventually
from workflows.canvas_run import CanvasRunWorkflow
from workflows.image_job import ImageJobWorkflow, provider_task_queue

IMAGE = StoredImage(key="images/c/j.png", url="https://cdn.test/images/c/j.png", content_type="image/png", size_bytes=1)


@dataclass
class FakeActivities:
    """Records every call with the workflow clock's time; polls answer from a script."""

    env: WorkflowEnvironment
    poll_answers: list[ProviderEvent] = field(default_factory=list)
    running_answers: list[bool] = field(default_factory=list)  # mark_running's, in turn; then None (no cap)
    calls: list[tuple[str, float, Any]] = field(default_factory=list)
    on_submit: Callable[[], Awaitable[None]] | None = None

    async def _record(self, name: str, argument: Any) -> None:
        self.calls.append((name, (await self.env.get_current_time()).timestamp(), argument))

    def named(self, name: str) -> list[Any]:
        return [argument for call, _, argument in self.calls if call == name]

    def times(self, name: str) -> list[float]:
        return [at for call, at, _ in self.calls if call == name]

    def recording(
        self, name: str, takes: type, answer: Callable[[], Awaitable[Any]] | None = None, returns: Any = None
    ) -> Callable[..., Any]:
        """A fake of the activity `name`: it records its argument (typed `takes`, so Temporal decodes it as the
        real activity's) and gives `answer()`'s result (None without one)."""

        async def fake(argument: Any) -> Any:
            await self._record(name, argument)
            return await answer() if answer else None

        fake.__annotations__ = {"argument": takes, "return": returns}
        return activity.defn(name=name)(fake)

    def activities(self) -> list[Callable[..., Any]]:
        async def done() -> bool:
            return True

        async def image() -> GenerationResult:
            return GenerationResult(images=[IMAGE])

        async def submitted() -> SubmitResult:
            if self.on_submit:
                await self.on_submit()
            return SubmitResult(provider_job_id="p-1")

        async def polled() -> ProviderEvent:
            return self.poll_answers.pop(0) if self.poll_answers else ProviderEvent(status="running")

        async def running() -> bool | None:
            return self.running_answers.pop(0) if self.running_answers else None

        return [
            self.recording("create_run", ImageJobInput),
            self.recording("mark_running", ImageJobInput, running, bool | None),
            self.recording("attach_provider_job", ProviderJobAttached),
            self.recording("record_progress", ProgressUpdate),
            self.recording("update_node", NodeUpdate, done, bool),
            *(self.recording(name, RunTransition, done, bool) for name in ("complete_run", "fail_run", "cancel_run")),
            self.recording("generate_image", ProviderCall, image, GenerationResult),
            self.recording("submit_job", ProviderCall, submitted, SubmitResult),
            self.recording("poll_job", PollRequest, polled, ProviderEvent),
            self.recording("store_outputs", StoreOutputsRequest, image, GenerationResult),
            self.recording("cancel_at_provider", CancelAtProvider),
        ]


def job_input(*, asynchronous: bool, polling: PollingPlan | None = None) -> ImageJobInput:
    from models.payloads import PromptSpec

    return ImageJobInput(
        job_id="job_" + uuid.uuid4().hex,
        canvas_id="c",
        node_id="n",
        provider="replicate" if asynchronous else "local",
        model="m",
        spec=PromptSpec(prompt="a quiet harbour"),
        asynchronous=asynchronous,
        polling=polling or PollingPlan(webhook_grace=10, interval=5, timeout=300),
    )


@asynccontextmanager
async def workflow_worker(env: WorkflowEnvironment, fakes: FakeActivities) -> AsyncIterator[str]:
    queue = f"wf-{uuid.uuid4().hex[:8]}"
    main = Worker(env.client, task_queue=queue, workflows=[ImageJobWorkflow], activities=fakes.activities())
    providers = [
        Worker(env.client, task_queue=provider_task_queue(queue, name), activities=fakes.activities())
        for name in ("local", "replicate")
    ]
    async with main, providers[0], providers[1]:
        yield queue


async def start(env: WorkflowEnvironment, queue: str, job: ImageJobInput) -> WorkflowHandle[Any, Any]:
    return await env.client.start_workflow(
        ImageJobWorkflow.run, job, id=job.job_id, task_queue=queue, id_conflict_policy=WorkflowIDConflictPolicy.FAIL
    )


async def replay(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    history = await handle.fetch_history()
    await Replayer(workflows=[ImageJobWorkflow, CanvasRunWorkflow]).replay_workflow(history)


async def test_synchronous_job_runs_every_step_and_replays(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=False))
        result = await handle.result()
    assert [image.url for image in result.images] == [IMAGE.url]
    assert [name for name, _, _ in fakes.calls] == [
        "create_run",
        "mark_running",
        "generate_image",
        "update_node",
        "complete_run",
    ]
    assert fakes.named("update_node")[0].image_url == IMAGE.url
    await replay(time_skipping_env, handle)


async def test_a_job_at_its_tenants_cap_asks_again_when_woken_and_else_at_ever_sparser_rechecks(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(time_skipping_env, running_answers=[False, False, False, False, True])
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=False))
        await eventually(lambda: fakes.named("mark_running"), what="the job to find its tenant at the cap")
        await handle.signal(ImageJobWorkflow.running_slot_freed)
        await eventually(lambda: len(fakes.named("mark_running")) == 2, what="the woken job to ask again")
        await handle.result()
    waits = [later - earlier for earlier, later in itertools.pairwise(fakes.times("mark_running"))]
    # Woken: at once. Then nobody wakes it (the slot went to another job): about 10 s, then 20 and 40, each spread
    # by up to a quarter.
    assert round(waits[0]) == 0, waits
    for wait, nominal in zip(waits[1:], (10, 20, 40), strict=True):
        assert 0.75 * nominal - 1 <= wait <= 1.25 * nominal + 1, (waits, nominal)
    assert [name for name, _, _ in fakes.calls][-3:] == ["generate_image", "update_node", "complete_run"]
    await replay(time_skipping_env, handle)


async def test_database_steps_are_local_activities(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=False))
        await handle.result()
    history = await handle.fetch_history()
    scheduled = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    markers = [
        event.marker_recorded_event_attributes.marker_name
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
    ]
    assert scheduled == ["generate_image"]  # only the provider call goes through a task queue
    assert markers.count("core_local_activity") == 4  # create_run, mark_running, update_node, complete_run
    assert markers.count("core_patch") == 1


@pytest.mark.parametrize("recorded", sorted(Path(__file__).with_name("histories").glob("*.json")), ids=lambda p: p.stem)
async def test_histories_of_earlier_versions_replay(recorded: Path) -> None:
    history = WorkflowHistory.from_json(recorded.stem, json.loads(recorded.read_text()))
    assert history.events, recorded
    await Replayer(workflows=[ImageJobWorkflow, CanvasRunWorkflow]).replay_workflow(history)


async def test_no_webhook_means_polling_at_the_planned_cadence(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(
        time_skipping_env,
        poll_answers=[
            ProviderEvent(status="running", progress=30.0),
            ProviderEvent(status="running", progress=60.0),
            ProviderEvent(status="succeeded", output_urls=["https://cdn.test/out.png"]),
        ],
    )
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=True))
        await handle.result()
    submitted_at = fakes.times("submit_job")[0]
    polls = fakes.times("poll_job")
    assert len(polls) == 3
    assert polls[0] - submitted_at == pytest.approx(10, abs=1)
    assert [round(later - earlier) for earlier, later in zip(polls, polls[1:], strict=False)] == [5, 5]
    assert [update.progress for update in fakes.named("record_progress")] == [30.0, 60.0]
    assert fakes.named("store_outputs")[0].urls == ["https://cdn.test/out.png"]
    await replay(time_skipping_env, handle)


@asynccontextmanager
async def waiting_for_webhooks(
    env: WorkflowEnvironment, fakes: FakeActivities
) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """An asynchronous job (a grace of 10 s, then polls 5 s apart) whose provider job is attached: it waits."""
    job = job_input(asynchronous=True, polling=PollingPlan(webhook_grace=10, interval=5, timeout=300))
    async with workflow_worker(env, fakes) as queue:
        handle = await start(env, queue, job)
        await eventually(lambda: fakes.named("attach_provider_job"), what="the provider job to be attached")
        yield handle


async def test_terminal_webhook_stops_polling(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    async with waiting_for_webhooks(time_skipping_env, fakes) as handle:
        await time_skipping_env.sleep(12)  # one poll happens after the grace period
        done = ProviderEvent(status="succeeded", output_urls=["https://cdn.test/a.png"], delivery_id="d-final")
        for _ in range(3):
            await handle.signal(ImageJobWorkflow.provider_event, done)
        await handle.signal(
            ImageJobWorkflow.provider_event, ProviderEvent(status="running", progress=50.0, delivery_id="late")
        )
        await handle.result()
        await time_skipping_env.sleep(60)
    assert len(fakes.named("poll_job")) == 1
    assert len(fakes.named("store_outputs")) == 1
    assert fakes.named("record_progress") == []
    await replay(time_skipping_env, handle)


async def test_webhooks_that_keep_coming_hold_polling_off(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    async with waiting_for_webhooks(time_skipping_env, fakes) as handle:
        # Each progress webhook comes within the grace of the one before, and the job ends 24 s in: past the
        # grace counted from the submit, never past it counted from the latest webhook.
        for progress in (30.0, 60.0):
            await time_skipping_env.sleep(8)
            await handle.signal(ImageJobWorkflow.provider_event, ProviderEvent(status="running", progress=progress))
        await time_skipping_env.sleep(8)
        done = ProviderEvent(status="succeeded", output_urls=["https://cdn.test/a.png"])
        await handle.signal(ImageJobWorkflow.provider_event, done)
        await handle.result()
    assert fakes.named("poll_job") == []
    assert [update.progress for update in fakes.named("record_progress")] == [30.0, 60.0]
    await replay(time_skipping_env, handle)


async def test_webhook_before_the_wait_is_kept(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    handles: list[WorkflowHandle[Any, Any]] = []

    async def deliver_during_submit() -> None:
        event = ProviderEvent(status="succeeded", output_urls=["https://cdn.test/early.png"], delivery_id="early")
        await handles[0].signal(ImageJobWorkflow.provider_event, event)

    fakes.on_submit = deliver_during_submit
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handles.append(await start(time_skipping_env, queue, job_input(asynchronous=True)))
        await handles[0].result()
    assert fakes.named("poll_job") == []
    assert fakes.named("store_outputs")[0].urls == ["https://cdn.test/early.png"]


async def test_a_second_job_from_a_retried_submit_is_cancelled_and_ignored(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # The first submit created p-0 but its answer was lost; the retried submit created p-1 (the fake's answer).
    # Both report to the job's webhook URL.
    fakes = FakeActivities(time_skipping_env)
    handles: list[WorkflowHandle[Any, Any]] = []

    def event_of(provider_job_id: str, status: str, url: str | None = None) -> ProviderEvent:
        return ProviderEvent(
            status=status,  # type: ignore[arg-type]
            output_urls=[url] if url else [],
            delivery_id=f"{provider_job_id}:{status}",
            provenance=Provenance(provider_job_id=provider_job_id),
        )

    async def stray_reports_during_submit() -> None:
        await handles[0].signal(ImageJobWorkflow.provider_event, event_of("p-0", "running"))

    fakes.on_submit = stray_reports_during_submit
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handles.append(await start(time_skipping_env, queue, job_input(asynchronous=True)))
        await eventually(lambda: fakes.named("attach_provider_job"), what="the provider job to be attached")
        await handles[0].signal(ImageJobWorkflow.provider_event, event_of("p-0", "succeeded", "https://cdn.test/0.png"))
        await handles[0].signal(ImageJobWorkflow.provider_event, event_of("p-1", "succeeded", "https://cdn.test/1.png"))
        await handles[0].result()
    assert [request.provider_job_id for request in fakes.named("cancel_at_provider")] == ["p-0"]
    assert [request.urls for request in fakes.named("store_outputs")] == [["https://cdn.test/1.png"]]
    await replay(time_skipping_env, handles[0])


async def test_provider_that_never_finishes_times_out(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    job = job_input(asynchronous=True, polling=PollingPlan(webhook_grace=5, interval=5, timeout=60))
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == "ProviderTimeout"
    (failed,) = fakes.named("fail_run")
    assert failed.error_code == "ProviderTimeout"
    assert fakes.named("update_node")[-1].status == "failed"
    assert 10 <= len(fakes.named("poll_job")) <= 12
    await replay(time_skipping_env, handle)


async def test_failed_provider_job_fails_the_run(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(
        time_skipping_env,
        poll_answers=[
            ProviderEvent(status="failed", error="NSFW content detected", error_type="ContentPolicyViolation")
        ],
    )
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=True))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    (failed,) = fakes.named("fail_run")
    assert (failed.error_code, failed.error) == ("ContentPolicyViolation", "NSFW content detected")
    assert fakes.named("update_node")[-1].error == "NSFW content detected"


async def test_cancel_also_cancels_at_the_provider(time_skipping_env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(time_skipping_env)
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=True))
        await eventually(lambda: fakes.named("attach_provider_job"), what="the provider job to be attached")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert [request.provider_job_id for request in fakes.named("cancel_at_provider")] == ["p-1"]
    assert [change.status for change in fakes.named("cancel_run")] == ["cancelled"]
    assert fakes.named("update_node")[-1].status == "cancelled"
    await replay(time_skipping_env, handle)


def test_policies_bound_provider_retries() -> None:
    from workflows.policies import PROVIDER_CALL

    assert PROVIDER_CALL["retry_policy"].maximum_attempts == 3
    assert PROVIDER_CALL["heartbeat_timeout"] <= timedelta(seconds=30)


def test_the_fallback_poll_backs_off_for_webhook_providers_and_keeps_pace_otherwise() -> None:
    backing_off = PollingPlan(interval=5, backoff=True, max_interval=60)
    assert [backing_off.next_interval(polls) for polls in range(1, 8)] == [5, 10, 20, 40, 60, 60, 60]
    assert [PollingPlan(interval=5).next_interval(polls) for polls in range(1, 4)] == [5, 5, 5]


async def test_a_webhook_provider_that_never_calls_back_is_polled_with_backoff(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    # The spec: never poll a webhook-capable provider continuously. Over 300 s: polls at 5, 10, 20, 40, 80, 140,
    # 200 and 260 s instead of one every 5 s (60 polls).
    fakes = FakeActivities(time_skipping_env)
    plan = PollingPlan(webhook_grace=5, interval=5, timeout=300, backoff=True, max_interval=60)
    async with workflow_worker(time_skipping_env, fakes) as queue:
        handle = await start(time_skipping_env, queue, job_input(asynchronous=True, polling=plan))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert 7 <= len(fakes.named("poll_job")) <= 9
    await replay(time_skipping_env, handle)
