"""The image ingest pipeline and the download guard, against real storage and a file host on a real socket."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.config import Settings
from core.ingest import ImageIngest
from core.netguard import DownloadRefused, check_download_url
from core.storage import LocalStorage, S3Storage, build_storage
from models.errors import BAD_OUTPUT, ProviderRejected, ProviderUnavailable
from models.payloads import StoredImage
from tests.fakes.server import RecordedRequest, Recorder, free_port, serve
from tests.fixtures.s3 import s3_admin_client
from tests.fixtures.stack import make_settings

MIB = 1024 * 1024
CHUNK = 64 * 1024


def image_bytes(width: int = 1024, height: int = 512, format: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), "red" if mode != "P" else 1)
    if format == "GIF":
        image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height`; Pillow reads the size without decoding any pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@dataclass
class ImageHost:
    """A file host for result URLs: images, HTML, redirects, errors, and a body that never ends."""

    recorder: Recorder = field(default_factory=Recorder)
    png: bytes = field(default_factory=image_bytes)
    endless_sent: int = 0
    endless_finished: bool = False
    endless_stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, query = (
            scope["path"],
            dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part),
        )
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        self.recorder.requests.append(RecordedRequest(scope["method"], path, query, headers, b""))
        if path == "/image.png":
            await respond(send, 200, self.png, "image/png")
        elif path == "/page.html":
            await respond(send, 200, b"<!doctype html><html><body>Not found</body></html>", "text/html")
        elif path == "/redirect":
            await respond(send, 302, b"", "text/plain", [(b"location", query["to"].encode())])
        elif path.startswith("/hop/"):
            remaining = int(path.removeprefix("/hop/"))
            target = f"/hop/{remaining - 1}" if remaining > 1 else "/image.png"
            await respond(send, 302, b"", "text/plain", [(b"location", target.encode())])
        elif path.startswith("/status/"):
            await respond(send, int(path.removeprefix("/status/")), b"{}", "application/json")
        elif path == "/declared-huge":
            await self.declared_huge(receive, send)
        elif path == "/endless":
            await self.endless(receive, send)

    async def declared_huge(self, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"image/png"), (b"content-length", str(10 * 1024 * MIB).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.png[:CHUNK], "more_body": True})
        await wait_for_disconnect(receive)

    async def endless(self, receive: Any, send: Any) -> None:
        """A PNG-looking body of 256 MiB, sent until the client hangs up."""
        total = 256 * MIB
        disconnected = asyncio.create_task(wait_for_disconnect(receive))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
        body = self.png[:CHUNK].ljust(CHUNK, b"\0")
        while self.endless_sent < total and not disconnected.done():
            await send({"type": "http.response.body", "body": body, "more_body": True})
            self.endless_sent += len(body)
            await asyncio.sleep(0)
        if not disconnected.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.endless_finished = True
        disconnected.cancel()
        self.endless_stopped.set()


async def respond(
    send: Any, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_for_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@pytest.fixture
async def image_host() -> AsyncIterator[tuple[ImageHost, str]]:
    host = ImageHost()
    async with serve(host) as base_url:
        yield host, base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the test go here, so that it can check none are left."""
    directory = tmp_path / "spool"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def settings(local_settings: Settings) -> Settings:
    return local_settings.model_copy(update={"MAX_IMAGE_BYTES": MIB, "DOWNLOAD_ALLOWLIST": ["127.0.0.1"]})


def make_ingest(
    settings: Settings, http: httpx.AsyncClient, *, output_count: int = 1, **overrides: Any
) -> tuple[ImageIngest, LocalStorage]:
    storage = build_storage(settings)
    assert isinstance(storage, LocalStorage)
    ingest = ImageIngest(
        storage=storage,
        http=http,
        settings=settings,
        key_prefix="images/canvas-1/job-1",
        output_count=output_count,
        **overrides,
    )
    return ingest, storage


def stored_files(settings: Settings) -> list[str]:
    root = settings.local_storage_dir
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.exists() else []


def assert_bad_output(error: pytest.ExceptionInfo[ProviderRejected]) -> None:
    assert error.value.type == BAD_OUTPUT
    assert error.value.retryable is False


async def test_png_bytes_are_stored_with_a_webp_thumbnail(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path
) -> None:
    ingest, storage = make_ingest(settings, http)
    png = image_bytes(1024, 512)

    image = await ingest.store_bytes(png)

    assert image == StoredImage(
        key="images/canvas-1/job-1.png",
        url="http://files.test/files/images/canvas-1/job-1.png",
        content_type="image/png",
        size_bytes=len(png),
        width=1024,
        height=512,
        thumbnail_key="images/canvas-1/job-1.thumb.webp",
        thumbnail_url="http://files.test/files/images/canvas-1/job-1.thumb.webp",
    )
    assert ingest.stored == [image]
    assert storage.local_path(image.key).read_bytes() == png
    with Image.open(storage.local_path("images/canvas-1/job-1.thumb.webp")) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (256, 128)
    assert list(spool_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("format", "mode", "content_type", "extension"),
    [
        ("JPEG", "RGB", "image/jpeg", "jpg"),
        ("WEBP", "RGBA", "image/webp", "webp"),
        ("GIF", "P", "image/gif", "gif"),
        ("PNG", "LA", "image/png", "png"),
    ],
)
async def test_each_accepted_format_keeps_its_type(
    settings: Settings, http: httpx.AsyncClient, format: str, mode: str, content_type: str, extension: str
) -> None:
    ingest, storage = make_ingest(settings, http)

    image = await ingest.store_bytes(image_bytes(300, 600, format=format, mode=mode))

    assert (image.key, image.content_type, image.width, image.height) == (
        f"images/canvas-1/job-1.{extension}",
        content_type,
        300,
        600,
    )
    with Image.open(storage.local_path("images/canvas-1/job-1.thumb.webp")) as thumbnail:
        assert thumbnail.size == (128, 256)


async def test_images_are_stored_in_s3_with_their_thumbnail(s3_settings: Settings, http: httpx.AsyncClient) -> None:
    storage = S3Storage(s3_settings)
    ingest = ImageIngest(
        storage=storage, http=http, settings=s3_settings, key_prefix="images/canvas-1/job-1", output_count=1
    )
    try:
        image = await ingest.store_bytes(image_bytes(800, 800))
        assert image.thumbnail_key is not None
        thumbnail = await http.get(await storage.presigned_get(image.thumbnail_key))
    finally:
        await storage.aclose()

    admin = s3_admin_client(s3_settings.S3_ENDPOINT_URL or "")
    head = admin.head_object(Bucket=s3_settings.S3_BUCKET, Key="images/canvas-1/job-1.png")
    assert head["ContentType"] == "image/png" and head["ContentLength"] == image.size_bytes
    assert thumbnail.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumbnail.content)) as small:
        assert small.size == (256, 256)


async def test_several_outputs_get_numbered_keys(settings: Settings, http: httpx.AsyncClient) -> None:
    ingest, _ = make_ingest(settings, http, output_count=3)

    images = [await ingest.store_bytes(image_bytes(64, 64)) for _ in range(3)]

    assert [image.key for image in images] == [f"images/canvas-1/job-1-{index}.png" for index in range(3)]
    assert [image.thumbnail_key for image in images] == [
        f"images/canvas-1/job-1-{index}.thumb.webp" for index in range(3)
    ]
    with pytest.raises(ProviderRejected, match="more than the 3"):
        await ingest.store_bytes(image_bytes(64, 64))


async def test_storing_again_overwrites_instead_of_duplicating(settings: Settings, http: httpx.AsyncClient) -> None:
    for _ in range(2):
        ingest, _ = make_ingest(settings, http)
        await ingest.store_bytes(image_bytes(64, 64))

    assert stored_files(settings) == ["images/canvas-1/job-1.png", "images/canvas-1/job-1.thumb.webp"]


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><head><title>Error</title></head></html>",
        b'{"error": {"message": "expired"}}',
        b"Access denied",
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
    ],
    ids=["html", "json", "text", "empty", "corrupt-png"],
)
async def test_non_images_are_refused_and_nothing_is_stored(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path, body: bytes
) -> None:
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected) as error:
        await ingest.store_bytes(body)

    assert_bad_output(error)
    assert stored_files(settings) == []
    assert list(spool_dir.iterdir()) == []
    assert ingest.stored == []


async def test_a_stream_over_the_cap_is_refused_after_one_chunk_too_many(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path
) -> None:
    ingest, _ = make_ingest(settings, http)
    pulled = 0

    async def endless_png() -> AsyncIterator[bytes]:
        nonlocal pulled
        chunk = image_bytes(64, 64)[:CHUNK].ljust(CHUNK, b"\0")
        while True:
            pulled += 1
            yield chunk

    with pytest.raises(ProviderRejected, match="byte limit") as error:
        await ingest.store_stream(endless_png())

    assert_bad_output(error)
    assert pulled == MIB // CHUNK + 1
    assert stored_files(settings) == [] and list(spool_dir.iterdir()) == []


async def test_bytes_over_the_cap_are_refused(settings: Settings, http: httpx.AsyncClient) -> None:
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="byte limit"):
        await ingest.store_bytes(image_bytes(64, 64).ljust(MIB + 1, b"\0"))


async def test_very_large_images_are_stored_without_a_thumbnail(
    settings: Settings, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, _ = make_ingest(settings, http)

    image = await ingest.store_bytes(png_header_only(8000, 7000))

    assert (image.width, image.height, image.thumbnail_key, image.thumbnail_url) == (8000, 7000, None, None)
    assert stored_files(settings) == ["images/canvas-1/job-1.png"]
    assert "no thumbnail" in caplog.text


async def test_a_result_over_the_pixel_budget_is_refused_before_any_decode(
    settings: Settings, http: httpx.AsyncClient
) -> None:
    ingest, _ = make_ingest(make_settings(settings, MAX_IMAGE_PIXELS=4000 * 4000), http)

    with pytest.raises(ProviderRejected, match="megapixel") as error:
        await ingest.store_bytes(png_header_only(8000, 7000))

    assert_bad_output(error)
    assert stored_files(settings) == []


def thumbnail_pids(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The processes that drew thumbnails, as core.thumbnails announces them."""
    return [record.thumbnail_pid for record in caplog.records if hasattr(record, "thumbnail_pid")]


@contextmanager
def thumbnail_records_to(handler: logging.Handler) -> Iterator[None]:
    """`handler` sees core.thumbnails' records meanwhile, synchronously, before caplog does."""
    thumbnails_logger = logging.getLogger("core.thumbnails")
    thumbnails_logger.addHandler(handler)
    try:
        yield
    finally:
        thumbnails_logger.removeHandler(handler)


class KillThumbnailChildren(logging.Handler):
    """Kills each thumbnail child process the moment it is announced, as the OOM killer would."""

    def emit(self, record: logging.LogRecord) -> None:
        pid = getattr(record, "thumbnail_pid", os.getpid())
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("format", "size", "drawn_in_child"),
    [
        ("PNG", (1024, 512), False),
        ("PNG", (2048, 2048), False),  # THUMBNAIL_IN_PROCESS_MAX_PIXELS, the default
        ("PNG", (3000, 1500), True),
        ("JPEG", (4096, 4096), False),  # draft mode decodes it at 1/8 scale
    ],
)
async def test_thumbnails_of_large_decodes_are_drawn_in_a_child_process(
    settings: Settings,
    http: httpx.AsyncClient,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    format: str,
    size: tuple[int, int],
    drawn_in_child: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.thumbnails")
    ingest, storage = make_ingest(settings, http)

    image = await ingest.store_bytes(image_bytes(*size, format=format))

    [pid] = thumbnail_pids(caplog)
    assert (pid != os.getpid()) is drawn_in_child
    assert (image.width, image.height) == size
    with Image.open(storage.local_path(image.thumbnail_key or "")) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (256, 256 * size[1] // size[0])
        red, green, blue = thumbnail.convert("RGB").getpixel((10, 10))  # lossy WebP: about the source's red
        assert red > 240 and green < 16 and blue < 16
    assert list(spool_dir.iterdir()) == []


async def test_an_image_whose_thumbnail_child_is_killed_is_stored_without_one(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.thumbnails")
    ingest, _ = make_ingest(settings, http)

    with thumbnail_records_to(KillThumbnailChildren()):
        image = await ingest.store_bytes(image_bytes(3000, 1500))

    assert (image.width, image.height, image.thumbnail_key, image.thumbnail_url) == (3000, 1500, None, None)
    assert stored_files(settings) == ["images/canvas-1/job-1.png"]
    assert "no thumbnail for a 3000x1500 image: its child process was killed by SIGKILL" in caplog.text
    assert list(spool_dir.iterdir()) == []


async def test_a_large_image_the_child_cannot_decode_is_refused(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.thumbnails")
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="cannot be decoded: image file is truncated") as error:
        await ingest.store_bytes(png_header_only(3000, 1500))

    assert_bad_output(error)
    [pid] = thumbnail_pids(caplog)
    assert pid != os.getpid()
    assert stored_files(settings) == [] and list(spool_dir.iterdir()) == []


async def test_a_cancelled_store_takes_its_thumbnail_child_down(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.thumbnails")
    ingest, _ = make_ingest(settings, http)
    child_started = asyncio.Event()

    class NoticeChild(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            child_started.set()

    with thumbnail_records_to(NoticeChild()):
        storing = asyncio.create_task(ingest.store_bytes(image_bytes(3000, 1500)))
        await asyncio.wait_for(child_started.wait(), timeout=10)
        storing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await storing

    [child] = thumbnail_pids(caplog)
    assert not Path(f"/proc/{child}").exists()
    assert stored_files(settings) == [] and list(spool_dir.iterdir()) == []


async def test_thumbnail_children_run_no_more_than_the_limit_at_once(
    settings: Settings, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.thumbnails")
    settings = settings.model_copy(update={"THUMBNAIL_IN_PROCESS_MAX_PIXELS": 0, "THUMBNAIL_MAX_CHILD_PROCESSES": 1})
    ingests = [
        ImageIngest(
            storage=build_storage(settings), http=http, settings=settings, key_prefix=f"images/c/{i}", output_count=1
        )
        for i in range(3)
    ]
    started: list[int] = []
    alive_at_each_start: list[list[bool]] = []

    class WatchChildren(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            alive_at_each_start.append([Path(f"/proc/{pid}").exists() for pid in started])
            started.append(record.thumbnail_pid)

    with thumbnail_records_to(WatchChildren()):
        images = await asyncio.gather(*(ingest.store_bytes(image_bytes(64, 64)) for ingest in ingests))

    assert all(image.thumbnail_key for image in images)
    assert len(set(started) - {os.getpid()}) == 3
    assert alive_at_each_start == [[], [False], [False, False]]


async def test_progress_is_forwarded(settings: Settings, http: httpx.AsyncClient) -> None:
    reports: list[tuple[float, str | None]] = []

    async def on_progress(fraction: float, message: str | None) -> None:
        reports.append((fraction, message))

    ingest, _ = make_ingest(settings, http, on_progress=on_progress)
    await ingest.progress(0.5, "halfway")
    await ingest.progress(0.75)

    assert reports == [(0.5, "halfway"), (0.75, None)]


@pytest.mark.parametrize("prefix", ["images/../secrets/job", "/images/job", "images\\job", ""])
def test_key_prefixes_that_escape_storage_are_refused(settings: Settings, http: httpx.AsyncClient, prefix: str) -> None:
    with pytest.raises(ValueError):
        ImageIngest(storage=build_storage(settings), http=http, settings=settings, key_prefix=prefix, output_count=1)


async def test_a_result_url_is_downloaded_and_stored(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    host, base_url = image_host
    ingest, storage = make_ingest(settings, http)

    image = await ingest.store_url(f"{base_url}/image.png")

    assert storage.local_path(image.key).read_bytes() == host.png
    assert (image.width, image.height, image.thumbnail_key) == (1024, 512, "images/canvas-1/job-1.thumb.webp")


async def test_an_html_page_is_refused(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="expected a PNG") as error:
        await ingest.store_url(f"{base_url}/page.html")

    assert_bad_output(error)
    assert stored_files(settings) == []


async def test_an_endless_body_is_cut_off_at_the_cap(
    settings: Settings, http: httpx.AsyncClient, spool_dir: Path, image_host: tuple[ImageHost, str]
) -> None:
    host, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="byte limit") as error:
        await ingest.store_url(f"{base_url}/endless")

    assert_bad_output(error)
    await asyncio.wait_for(host.endless_stopped.wait(), timeout=10)
    assert not host.endless_finished
    assert host.endless_sent < 256 * MIB
    assert stored_files(settings) == [] and list(spool_dir.iterdir()) == []


async def test_a_declared_length_over_the_cap_is_refused_before_reading(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="more than the 1048576 byte limit") as error:
        await ingest.store_url(f"{base_url}/declared-huge")

    assert_bad_output(error)
    assert stored_files(settings) == []


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_while_downloading_are_retryable(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str], status: int
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderUnavailable, match=str(status)):
        await ingest.store_url(f"{base_url}/status/{status}")


async def test_a_missing_result_is_not_retried(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="404") as error:
        await ingest.store_url(f"{base_url}/status/404")

    assert_bad_output(error)


async def test_a_connection_failure_is_retryable(settings: Settings, http: httpx.AsyncClient) -> None:
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderUnavailable):
        await ingest.store_url(f"http://127.0.0.1:{free_port()}/image.png")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254"])
async def test_private_addresses_are_refused_without_a_request(
    local_settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str], address: str
) -> None:
    host, base_url = image_host
    port = base_url.rsplit(":", 1)[1]
    ingest, _ = make_ingest(local_settings, http)

    with pytest.raises(ProviderRejected, match="non-public address") as error:
        await ingest.store_url(f"http://{address}:{port}/image.png")

    assert_bad_output(error)
    assert host.recorder.requests == []


async def test_an_allowlisted_loopback_host_is_downloaded(
    local_settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    host, base_url = image_host
    settings = local_settings.model_copy(update={"DOWNLOAD_ALLOWLIST": ["127.0.0.0/8"]})
    ingest, _ = make_ingest(settings, http)

    image = await ingest.store_url(f"{base_url}/image.png")

    assert image.size_bytes == len(host.png)


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/image.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]/image.png"]
)
async def test_a_redirect_to_a_private_address_is_refused(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str], target: str
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="non-public address") as error:
        await ingest.store_url(f"{base_url}/redirect?to={target}")

    assert_bad_output(error)
    assert stored_files(settings) == []


async def test_up_to_three_redirects_are_followed(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    host, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    image = await ingest.store_url(f"{base_url}/hop/3")

    assert image.size_bytes == len(host.png)
    assert [request.path for request in host.recorder.requests] == ["/hop/3", "/hop/2", "/hop/1", "/image.png"]


async def test_a_fourth_redirect_is_refused(
    settings: Settings, http: httpx.AsyncClient, image_host: tuple[ImageHost, str]
) -> None:
    _, base_url = image_host
    ingest, _ = make_ingest(settings, http)

    with pytest.raises(ProviderRejected, match="more than 3 redirects"):
        await ingest.store_url(f"{base_url}/hop/4")


REFUSED_URLS = [
    "ftp://example.com/image.png",
    "file:///etc/passwd",
    "not a url",
    "http://localhost/image.png",
    "http://127.0.0.1/image.png",
    "http://2130706433/image.png",
    "http://0.0.0.0/image.png",
    "http://10.1.2.3/image.png",
    "http://172.16.0.1/image.png",
    "http://192.168.1.1/image.png",
    "http://100.64.0.1/image.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://224.0.0.1/image.png",
    "http://240.0.0.1/image.png",
    "http://[::1]/image.png",
    "http://[::]/image.png",
    "http://[fe80::1]/image.png",
    "http://[fd00::1]/image.png",
    "http://[ff02::1]/image.png",
    "http://[::ffff:127.0.0.1]/image.png",
    "http://[::ffff:169.254.169.254]/image.png",
    "http://[2002:a00:1::1]/image.png",
    "http://[64:ff9b::a9fe:a9fe]/image.png",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_the_guard_refuses_non_public_targets(url: str) -> None:
    with pytest.raises(DownloadRefused):
        await check_download_url(url, [])


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/image.png",
        "http://[2606:4700:4700::1111]/image.png",
        "http://[::ffff:93.184.216.34]/image.png",
        "HTTPS://1.1.1.1:8443/x",
    ],
)
async def test_the_guard_lets_public_addresses_through(url: str) -> None:
    await check_download_url(url, [])


@pytest.mark.parametrize(
    ("url", "allowlist"),
    [
        ("http://127.0.0.1:9000/image.png", ["127.0.0.1"]),
        ("http://10.1.2.3/image.png", ["10.0.0.0/8"]),
        ("http://localhost/image.png", ["LOCALHOST"]),
        ("http://[::ffff:10.0.0.5]/image.png", ["10.0.0.0/24"]),
        ("http://minio.internal./image.png", ["minio.internal"]),
    ],
)
async def test_the_allowlist_admits_hosts_and_networks(url: str, allowlist: list[str]) -> None:
    await check_download_url(url, allowlist)


async def test_the_allowlist_admits_only_what_it_names() -> None:
    with pytest.raises(DownloadRefused):
        await check_download_url("http://10.0.0.1/image.png", ["10.1.0.0/16", "127.0.0.1", "minio.internal"])
