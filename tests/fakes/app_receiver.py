"""An app's server receiving our outbound webhooks, over a real socket: it records every request and answers
from a script (a status and headers per request, then 200)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response

from tests.fakes.base import record_request
from tests.fakes.server import Recorder, serve


@dataclass
class AppReceiver:
    """`answers` are taken one per request; `url` is where it listens (set once serving)."""

    recorder: Recorder = field(default_factory=Recorder)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def answer(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.answers.extend((status, headers or {}) for status in statuses)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(request: Request) -> Response:
            await record_request(self.recorder, request)
            status, headers = self.answers.pop(0) if self.answers else (200, {})
            return Response(status_code=status, headers=headers, content=b"{}" if status < 300 else b"nope")

        return app


@asynccontextmanager
async def app_receiver() -> AsyncIterator[AppReceiver]:
    receiver = AppReceiver()
    async with serve(receiver.app()) as base_url:
        receiver.url = f"{base_url}/hooks/images"
        yield receiver
