"""What every fake provider shares: the request recorder and script, real image bytes, multipart parsing.

A fake is one module per provider (tests/fakes/<provider>.py) answering as that service does, over real
sockets; tests/fakes/app.py serves them all in one app. Each synchronous fake subclasses FakeService, which
records every request (tests assert on them field by field) and follows the test's Script per route (see
tests/fakes/script.py).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tests.fakes.script import Behaviour, Script, scripted_response
from tests.fakes.server import RecordedRequest, Recorder

STREAM_CHUNK = 64 * 1024


@lru_cache(maxsize=32)
def image_bytes(size: tuple[int, int], image_format: str = "PNG") -> bytes:
    """A real image: a two-colour gradient, so it is not trivially a single colour."""
    gradient = Image.linear_gradient("L").resize(size)
    flipped = gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    image = Image.merge("RGB", (gradient, Image.new("L", size, 96), flipped))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def form_fields(recorded: RecordedRequest) -> dict[str, str]:
    """The fields of a recorded multipart/form-data body; ValueError when it is not multipart."""
    return parse_multipart(recorded.headers.get("content-type", ""), recorded.body)


def form_files(recorded: RecordedRequest) -> dict[str, FilePart]:
    """The file parts (e.g. Stability's `image`) of a recorded multipart/form-data body."""
    return parse_multipart_files(recorded.headers.get("content-type", ""), recorded.body)


@dataclass(frozen=True)
class FilePart:
    """A multipart part sent with a filename: its bytes and declared type."""

    filename: str
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    """The plain fields (parts without a filename) of a multipart/form-data body."""
    return {
        name: payload.decode()
        for name, part, payload in _multipart_parts(content_type, body)
        if not part.get_filename()
    }


def parse_multipart_files(content_type: str, body: bytes) -> dict[str, FilePart]:
    return {
        name: FilePart(str(part.get_filename()), part.get_content_type(), payload)
        for name, part, payload in _multipart_parts(content_type, body)
        if part.get_filename()
    }


def _multipart_parts(content_type: str, body: bytes) -> list[tuple[str, EmailMessage, bytes]]:
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"not multipart/form-data but {content_type!r}")
    envelope = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    message = BytesParser(policy=policy.HTTP).parsebytes(envelope)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise ValueError("malformed multipart body")
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts.append((str(name), part, payload if isinstance(payload, bytes) else b""))
    return parts


async def record_request(recorder: Recorder, request: Request) -> bytes:
    body = await request.body()
    recorder.requests.append(
        RecordedRequest(
            method=request.method,
            path=request.scope["path"],
            query=dict(request.query_params),
            headers=dict(request.headers),
            body=body,
        )
    )
    return body


async def begin_request(
    recorder: Recorder, script: Script, request: Request, route: str
) -> tuple[bytes, Behaviour, Response | None]:
    """Record the request and take its behaviour; a scripted status or HTML page answers at once, and "slow"
    holds the answer until the client hangs up (so a timed-out test leaves no request running)."""
    body = await record_request(recorder, request)
    behaviour = script.next(route)
    scripted = scripted_response(behaviour)
    if scripted is not None:
        return body, behaviour, scripted
    if behaviour == "slow":
        deadline = time.monotonic() + script.slow_seconds
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(0.02)
        return body, "ok", None
    return body, behaviour, None


class FakeService:
    """Recording, scripting and image making for one fake provider's handlers."""

    def __init__(self, recorder: Recorder, script: Script) -> None:
        self.recorder = recorder
        self.script = script

    async def _record(self, request: Request) -> bytes:
        return await record_request(self.recorder, request)

    async def _begin(self, request: Request, route: str) -> tuple[bytes, Behaviour, Response | None]:
        return await begin_request(self.recorder, self.script, request, route)

    def _image(self, behaviour: Behaviour, image_format: str = "PNG") -> bytes:
        data = image_bytes(self.script.image_size, image_format)
        if behaviour == "oversized":
            return data + b"\0" * max(0, self.script.oversized_bytes - len(data))
        return data


def _image_response(data: bytes, media_type: str, headers: dict[str, str], *, stream: bool) -> Response:
    """Raw image bytes; large bodies are streamed in chunks without a Content-Length, as CDNs often do."""
    if not stream:
        return Response(data, headers=headers, media_type=media_type)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), STREAM_CHUNK):
            yield data[start : start + STREAM_CHUNK]

    return StreamingResponse(chunks(), headers=headers, media_type=media_type)
