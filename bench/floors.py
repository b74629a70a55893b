"""The floors of the API's answers (figures 1 and 2): bare FastAPI routes in the API process that commit the same
one statement the product's route waits for, through the same pool, and nothing else (no validation, pricing,
idempotency, tracing or handoff). What a product route spends beyond its floor is its own work.

    POST /bench/floor/start            records a run as POST /v1/jobs does (runs.record_run), marked started so
                                       no sweep starts a workflow for it
    POST /bench/floor/webhook/{jobId}  takes a delivery as POST /v1/webhooks/... does (deliveries.take_delivery)
                                       for a run the floor made; the harness deletes its pending signals after
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import text

from api.deps import AppState
from handoff.starts import new_job_id
from models.payloads import ImageJobInput, PromptSpec
from store import deliveries, runs

router = APIRouter(prefix="/bench/floor", include_in_schema=False)
FLOOR_PROVIDER = "bench-floor"


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.imagejobs
    return state


@router.post("/start", status_code=202)
async def start_floor(request: Request) -> dict[str, Any]:
    body = await request.json()
    job = ImageJobInput(
        job_id=new_job_id(),
        canvas_id=body["workflowId"],
        node_id=body["nodeId"],
        provider=FLOOR_PROVIDER,
        model="floor",
        spec=PromptSpec(prompt=body.get("prompt", "floor")),
    )
    async with app_state(request).autocommit_sessions() as session:
        await runs.record_run(session, job=job, workflow_started=True)
    return {"jobId": job.job_id, "status": "pending"}


@router.post("/webhook/{job_id}")
async def webhook_floor(job_id: str, request: Request) -> dict[str, str]:
    body = await request.body()
    message = json.loads(body)
    delivery = deliveries.Delivery(
        job_id=job_id,
        provider=FLOOR_PROVIDER,
        provider_job_id=None,
        dedupe_key=str(message["deliveryId"]),
        timeline=json.dumps({"message": f"Webhook: {message['status']}"}),
        event=body.decode(),
    )
    async with app_state(request).autocommit_sessions() as session:
        target = await deliveries.take_delivery(session, delivery=delivery)
    return {"status": "accepted" if target is not None else "unknown"}


def with_floors(app: FastAPI) -> FastAPI:
    app.include_router(router)
    return app


async def forget_floor_runs(sessions: Any) -> None:
    """The floor's runs and their pending signals, which nothing else would ever clear."""
    async with sessions() as session:
        await session.execute(text("DELETE FROM runs WHERE provider = :p"), {"p": FLOOR_PROVIDER})
        await session.commit()
