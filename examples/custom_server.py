"""A minimal model server for the `custom` provider: the job protocol of docs/custom-provider.md, nothing more.

Put your model where `draw` is (a diffusers pipeline, a ComfyUI workflow call) and point the orchestrator at it:

    python examples/custom_server.py --port 9100 --secret "$CUSTOM_PROVIDER_WEBHOOK_SECRET"
    CUSTOM_PROVIDER_URL=http://127.0.0.1:9100 CUSTOM_PROVIDER_WEBHOOK_SECRET=... make dev

Jobs live in memory and run one step at a time: pending -> running (50%) -> completed. Each change is POSTed to
the job's `webhookUrl`, signed `webhook-signature: <hex HMAC-SHA256 of the body>`; without a secret no webhook is
sent and the orchestrator polls `GET /jobs/{job_id}`. Images are answered as URLs of this server, or inline as
`b64_json` with `--inline`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import io
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from PIL import Image, ImageDraw


@dataclass
class Job:
    """One job, in the protocol's ImageJobStatus terms."""

    job_id: str
    prompt: str
    previous_image: str | None
    webhook_url: str | None
    status: str = "pending"
    progress: int = 0
    images: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": self.job_id, "status": self.status, "progress": self.progress}
        if self.images:
            body["images"] = self.images
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class ServerOptions:
    webhook_secret: str | None = None
    inline_images: bool = False  # answer b64_json instead of URLs
    step_seconds: float = 0.2


def draw(prompt: str, previous: bytes | None, size: tuple[int, int] = (512, 512)) -> bytes:
    """Stand-in for a model: a colour taken from the prompt, laid over the previous image when there is one."""
    digest = hashlib.sha256(prompt.encode()).digest()
    colour = (digest[0], digest[1], digest[2])
    base = Image.open(io.BytesIO(previous)).convert("RGB").resize(size) if previous else Image.new("RGB", size)
    image = Image.blend(base, Image.new("RGB", size, colour), 0.5)
    ImageDraw.Draw(image).text((16, 16), prompt[:60], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def create_app(options: ServerOptions | None = None) -> FastAPI:
    """The server as an ASGI app (the orchestrator's tests serve it over a real socket)."""
    settings = options or ServerOptions()
    app = FastAPI(title="custom image provider (reference)")
    jobs: dict[str, Job] = {}
    files: dict[str, bytes] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def notify(http: httpx.AsyncClient, job: Job) -> None:
        if not (job.webhook_url and settings.webhook_secret):
            return
        body = json.dumps(job.status_body()).encode()
        headers = {"content-type": "application/json", "webhook-signature": sign(settings.webhook_secret, body)}
        try:
            await http.post(job.webhook_url, content=body, headers=headers)
        except httpx.HTTPError:
            pass  # the orchestrator polls when a webhook does not arrive

    async def run(job: Job, base_url: str) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.sleep(settings.step_seconds)
            job.status, job.progress = "running", 50
            await notify(http, job)
            previous = (await http.get(job.previous_image)).content if job.previous_image else None
            png = await asyncio.to_thread(draw, job.prompt, previous)
            await asyncio.sleep(settings.step_seconds)
            if job.status != "running":  # cancelled meanwhile
                return
            if settings.inline_images:
                job.images = [{"b64_json": base64.b64encode(png).decode()}]
            else:
                files[job.job_id] = png
                job.images = [{"url": f"{base_url}/images/{job.job_id}.png"}]
            job.status, job.progress = "completed", 100
            await notify(http, job)

    @app.post("/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        payload = await request.json()
        spec = payload.get("promptSpec") or {}
        if not isinstance(spec.get("basePrompt"), str) or not spec["basePrompt"].strip():
            raise HTTPException(422, "promptSpec.basePrompt is required")
        job = Job(uuid.uuid4().hex, spec["basePrompt"], spec.get("previousImage"), payload.get("webhookUrl"))
        jobs[job.job_id] = job
        # Its own base URL as the caller reached it (behind a proxy or a mount too): the submit URL less /jobs.
        base_url = str(request.url.replace(query="")).removesuffix("/jobs")
        task = asyncio.create_task(run(job, base_url))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return job.status_body()

    @app.get("/jobs/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        if job_id not in jobs:
            raise HTTPException(404, f"no job {job_id}")
        return jobs[job_id].status_body()

    @app.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str) -> dict[str, Any]:
        if job_id not in jobs:
            raise HTTPException(404, f"no job {job_id}")
        job = jobs[job_id]
        if job.status in ("pending", "running"):
            job.status, job.error = "failed", "cancelled"
        return job.status_body()

    @app.get("/images/{job_id}.png")
    async def image(job_id: str) -> Response:
        if job_id not in files:
            raise HTTPException(404, "no such image")
        return Response(files[job_id], media_type="image/png")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", help="CUSTOM_PROVIDER_WEBHOOK_SECRET; without it no webhooks are sent")
    parser.add_argument("--inline", action="store_true", help="answer images as b64_json")
    args = parser.parse_args()
    app = create_app(ServerOptions(webhook_secret=args.secret, inline_images=args.inline))
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
