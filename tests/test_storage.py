"""Object storage against a real directory and against S3 over HTTP (moto)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import core.storage
from core.config import Settings
from core.storage import (
    LocalStorage,
    ObjectInfo,
    ObjectStorage,
    S3Storage,
    StorageNotReady,
    build_storage,
    read_file_parts,
    validate_key,
)
from tests.fixtures.s3 import s3_admin_client

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def backend_settings(request: pytest.FixtureRequest) -> Settings:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    return settings


@pytest.fixture
async def storage(backend_settings: Settings) -> AsyncIterator[ObjectStorage]:
    store = build_storage(backend_settings)
    yield store
    await store.aclose()


@pytest.fixture
async def s3_storage(s3_settings: Settings) -> AsyncIterator[S3Storage]:
    store = S3Storage(s3_settings.model_copy(update={"S3_PART_BYTES": 5 * MIB}))
    yield store
    await store.aclose()


def write_file(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


async def test_put_head_exists_url_delete(storage: ObjectStorage, tmp_path: Path) -> None:
    source = write_file(tmp_path, "source.png", b"\x89PNG\r\n\x1a\n" + b"x" * 100)

    await storage.put_file("images/c1/j1.png", source, "image/png")

    assert await storage.exists("images/c1/j1.png")
    assert await storage.head("images/c1/j1.png") == ObjectInfo(content_type="image/png", size=108)
    assert "images/c1/j1.png" in await storage.url_for("images/c1/j1.png")
    await storage.delete("images/c1/j1.png")
    assert not await storage.exists("images/c1/j1.png")
    assert await storage.head("images/c1/j1.png") is None
    await storage.delete("images/c1/j1.png")


async def test_put_replaces_an_existing_object(storage: ObjectStorage, tmp_path: Path) -> None:
    await storage.put_file("images/a.png", write_file(tmp_path, "first", b"first version"), "image/png")
    await storage.put_file("images/a.png", write_file(tmp_path, "second", b"second"), "image/png")

    info = await storage.head("images/a.png")

    assert info is not None and info.size == len(b"second")


async def test_check_passes_for_a_usable_backend(storage: ObjectStorage) -> None:
    await storage.check()


def test_build_storage_picks_the_configured_backend(local_settings: Settings, s3_settings: Settings) -> None:
    assert isinstance(build_storage(local_settings), LocalStorage)
    assert isinstance(build_storage(s3_settings), S3Storage)
    auto = s3_settings.model_copy(update={"STORAGE_BACKEND": "auto"})
    assert isinstance(build_storage(auto), S3Storage)


@pytest.mark.parametrize(
    "key",
    ["images/c1/j1.png", "images/c1/j1-0.thumb.webp", "a", "A_b-c.d/e"],
)
def test_validate_key_accepts_plain_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "../etc/passwd", "images/../../etc/passwd", "/etc/passwd", "images\\..\\x", "a//b", "images/", "a b", "ä.png"],
)
def test_path_traversal_and_odd_keys_are_refused(local_settings: Settings, key: str) -> None:
    storage = build_storage(local_settings)
    assert isinstance(storage, LocalStorage)
    with pytest.raises(ValueError):
        storage.local_path(key)


def test_local_path_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    storage = LocalStorage(root, "http://files.test/files")

    with pytest.raises(ValueError, match="outside"):
        storage.local_path("escape/secret.txt")


async def test_local_url_is_served_by_the_api(local_settings: Settings) -> None:
    storage = build_storage(local_settings)

    assert await storage.url_for("images/c1/j1.png") == "http://files.test/files/images/c1/j1.png"


async def test_local_put_leaves_only_the_final_file(local_settings: Settings, tmp_path: Path) -> None:
    storage = build_storage(local_settings)
    await storage.put_file("images/j1.png", write_file(tmp_path, "src", b"data"), "image/png")

    assert [path.name for path in (local_settings.local_storage_dir / "images").iterdir()] == ["j1.png"]


async def test_local_failed_put_leaves_nothing(local_settings: Settings, tmp_path: Path) -> None:
    storage = build_storage(local_settings)

    with pytest.raises(FileNotFoundError):
        await storage.put_file("images/j1.png", tmp_path / "missing", "image/png")

    assert list((local_settings.local_storage_dir / "images").iterdir()) == []


async def test_local_check_fails_when_the_root_is_not_a_directory(tmp_path: Path) -> None:
    root = write_file(tmp_path, "not-a-dir", b"")

    with pytest.raises(StorageNotReady):
        await LocalStorage(root, "http://files.test/files").check()


async def test_s3_check_fails_for_a_missing_bucket(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings.model_copy(update={"S3_BUCKET": "no-such-bucket-here"}))
    try:
        with pytest.raises(StorageNotReady, match="no-such-bucket-here"):
            await storage.check()
    finally:
        await storage.aclose()


def test_s3_refuses_parts_below_the_s3_minimum(s3_settings: Settings) -> None:
    with pytest.raises(ValueError, match="S3_PART_BYTES"):
        S3Storage(s3_settings.model_copy(update={"S3_PART_BYTES": MIB}))


async def test_s3_presigned_get_serves_the_object_and_is_never_the_kept_url(
    s3_storage: S3Storage, tmp_path: Path
) -> None:
    data = os.urandom(4096)
    await s3_storage.put_file("images/c1/j1.webp", write_file(tmp_path, "img", data), "image/webp")

    url = await s3_storage.presigned_get("images/c1/j1.webp")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)

    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    # What records keep is the API's stable URL, never the presigned one.
    assert await s3_storage.url_for("images/c1/j1.webp") == "http://127.0.0.1:8000/files/images/c1/j1.webp"
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"


async def test_s3_public_base_url_is_used_when_set(s3_settings: Settings) -> None:
    storage = S3Storage(s3_settings.model_copy(update={"S3_PUBLIC_BASE_URL": "https://cdn.example.com/"}))

    assert await storage.url_for("images/c1/j1.png") == "https://cdn.example.com/images/c1/j1.png"


async def test_s3_uses_one_client_for_every_call(s3_storage: S3Storage, tmp_path: Path) -> None:
    clients = await asyncio.gather(*(s3_storage._s3() for _ in range(5)))
    await s3_storage.head("images/none.png")

    assert all(client is clients[0] for client in clients)
    assert await s3_storage._s3() is clients[0]


async def test_s3_multipart_upload_of_a_large_file(
    s3_storage: S3Storage, s3_settings: Settings, tmp_path: Path
) -> None:
    data = os.urandom(20 * MIB)
    source = write_file(tmp_path, "large.png", data)

    await s3_storage.put_file("images/large.png", source, "image/png")

    stored = s3_admin_client(s3_storage._endpoint_url or "").get_object(
        Bucket=s3_storage.bucket, Key="images/large.png"
    )
    assert stored["ETag"].strip('"').endswith("-4"), "uploaded as four 5 MiB parts"
    assert stored["ContentType"] == "image/png"
    assert hashlib.sha256(stored["Body"].read()).digest() == hashlib.sha256(data).digest()


def assert_no_trace_of(storage: S3Storage, key: str) -> None:
    admin = s3_admin_client(storage._endpoint_url or "")
    assert admin.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []
    assert admin.list_objects_v2(Bucket=storage.bucket, Prefix=key).get("KeyCount") == 0


async def test_s3_failed_multipart_upload_leaves_nothing(
    s3_storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts_read = 0

    async def failing_parts(path: Path, part_bytes: int) -> AsyncIterator[bytes]:
        nonlocal parts_read
        async for part in read_file_parts(path, part_bytes):
            parts_read += 1
            yield part
            raise OSError("disk went away")

    monkeypatch.setattr(core.storage, "read_file_parts", failing_parts)
    source = write_file(tmp_path, "large.png", os.urandom(12 * MIB))

    with pytest.raises(OSError, match="disk went away"):
        await s3_storage.put_file("images/broken.png", source, "image/png")

    assert parts_read == 1, "the failure came after a part was uploaded"
    assert_no_trace_of(s3_storage, "images/broken.png")


async def test_s3_cancelled_multipart_upload_leaves_nothing(
    s3_storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_part_uploaded = asyncio.Event()

    async def stalling_parts(path: Path, part_bytes: int) -> AsyncIterator[bytes]:
        async for part in read_file_parts(path, part_bytes):
            yield part
            first_part_uploaded.set()
            await asyncio.Event().wait()

    monkeypatch.setattr(core.storage, "read_file_parts", stalling_parts)
    source = write_file(tmp_path, "large.png", os.urandom(12 * MIB))
    upload = asyncio.create_task(s3_storage.put_file("images/cancelled.png", source, "image/png"))
    await asyncio.wait_for(first_part_uploaded.wait(), timeout=10)

    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert_no_trace_of(s3_storage, "images/cancelled.png")


async def test_keys_under_lists_only_what_starts_with_the_prefix(storage: ObjectStorage, tmp_path: Path) -> None:
    source = write_file(tmp_path, "source.png", b"\x89PNG\r\n\x1a\n")
    for key in ("images/c1/job_a.png", "images/c1/job_a.thumb.webp", "images/c1/job_ab.png", "images/c2/job_a.png"):
        await storage.put_file(key, source, "image/png")

    listed = await storage.keys_under("images/c1/job_a")

    assert sorted(listed) == ["images/c1/job_a.png", "images/c1/job_a.thumb.webp", "images/c1/job_ab.png"]
    assert await storage.keys_under("images/c3/job_a") == []
