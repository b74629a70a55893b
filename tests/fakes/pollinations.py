"""Fake Pollinations: `GET /prompt/{prompt}` (and the newer `/image/{prompt}`) answering image bytes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.base import (
    FakeService,
    _image_response,
)
from tests.fakes.script import Script
from tests.fakes.server import Recorder

POLLINATIONS = "pollinations.image"


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = PollinationsFake(recorder, script)
    return [
        Route("/prompt/{prompt:path}", fake.pollinations, methods=["GET"]),
        Route("/image/{prompt:path}", fake.pollinations, methods=["GET"]),
    ]


class PollinationsFake(FakeService):
    """Pollinations image URLs."""

    async def pollinations(self, request: Request) -> Response:
        _, behaviour, early = await self._begin(request, POLLINATIONS)
        if early is not None:
            return early
        if behaviour in ("moderation", "all_filtered"):
            return Response(f"scripted behaviour {behaviour!r} does not exist on Pollinations", 501)
        image = self._image(behaviour, "JPEG")
        return _image_response(image, "image/jpeg", {}, stream=behaviour == "oversized")
