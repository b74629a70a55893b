"""Fake midjourney-proxy (point MIDJOURNEY_BASE_URL at `{url}/mj`): imagine tasks whose outcome is in the body's
`code`, polled at /task/{id}/fetch (SUBMITTED -> IN_PROGRESS 0% -> 45% -> SUCCESS 100%), with unsigned notifyHook
callbacks."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.async_base import AsyncFakeState, WebhookQueue, _base_url, _millis

MIDJOURNEY_IMAGINE = "midjourney.imagine"

MIDJOURNEY_FETCH = "midjourney.fetch"


def routes(state: AsyncFakeState) -> list[Route]:
    midjourney = MidjourneyRoutes(state)
    return [
        Route("/mj/submit/imagine", midjourney.imagine, methods=["POST"]),
        Route("/mj/task/{id}/fetch", midjourney.fetch, methods=["GET"]),
    ]


class MidjourneyRoutes:
    """midjourney-proxy's task API."""

    def __init__(self, state: AsyncFakeState) -> None:
        self.state = state

    async def imagine(self, request: Request) -> Response:
        raw, behaviour, answer = await self.state.begin(request, MIDJOURNEY_IMAGINE)
        if answer is not None:
            return answer
        secret = self.state.options.midjourney_secret
        if secret is not None and request.headers.get("mj-api-secret") != secret:
            return Response(status_code=401)
        body = json.loads(raw or b"{}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return JSONResponse({"code": 4, "description": "prompt cannot be empty", "result": None})
        banned = next((word for word in self.state.options.banned_words if word in prompt.lower()), None)
        if behaviour == "moderation" or banned is not None:
            properties = {"promptEn": prompt, "bannedWord": banned or prompt.split()[0]}
            return JSONResponse({"code": 24, "description": "Banned prompt", "properties": properties})
        task = _new_task(body)
        self.state.tasks[task["id"]] = task
        self.state.spawn(self._run(task, _base_url(request), body.get("notifyHook")))
        answer_body = {"code": 1, "description": "Submit success", "result": task["id"]}
        return JSONResponse(answer_body | {"properties": {"discordInstanceId": "1118138338562560102"}})

    async def fetch(self, request: Request) -> Response:
        _, _, answer = await self.state.begin(request, MIDJOURNEY_FETCH)
        if answer is not None:
            return answer
        task = self.state.tasks.get(request.path_params["id"])
        # The real proxy answers an unknown id with HTTP 200 and an empty body.
        return JSONResponse(task) if task is not None else Response(status_code=200)

    async def _run(self, task: dict[str, Any], base_url: str, notify_hook: str | None) -> None:
        webhook = WebhookQueue(self.state, notify_hook, None)
        steps: list[dict[str, Any]] = [
            {"status": "SUBMITTED"},
            {"status": "IN_PROGRESS", "progress": "0%", "startTime": _millis()},
            {"status": "IN_PROGRESS", "progress": "45%"},
            self._outcome(task, base_url),
        ]
        for step in steps:
            await asyncio.sleep(self.state.options.step_seconds)
            if "finishTime" in step:
                step["finishTime"] = _millis()
            task |= step
            await webhook.send(task["status"], task, signed=False)
        await webhook.flush()

    def _outcome(self, task: dict[str, Any], base_url: str) -> dict[str, Any]:
        reason = self.state.options.midjourney_fail_reason
        if reason:
            return {"status": "FAILURE", "failReason": reason, "finishTime": None}
        image_url = f"{base_url}/outputs/mj-{task['id']}.png"
        return {"status": "SUCCESS", "progress": "100%", "imageUrl": image_url, "finishTime": None}


def _new_task(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{_millis()}{secrets.randbelow(1000):03d}",
        "action": "IMAGINE",
        "status": "NOT_START",
        "prompt": body["prompt"],
        "promptEn": body["prompt"],
        "description": f"/imagine {body['prompt']}",
        "state": body.get("state"),
        "submitTime": _millis(),
        "startTime": None,
        "finishTime": None,
        "imageUrl": None,
        "progress": "",
        "failReason": None,
        "properties": {"notifyHook": body.get("notifyHook"), "finalPrompt": body["prompt"]},
    }
