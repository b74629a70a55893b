"""Object storage: a local directory (served by the API under /files) or S3 / R2 / MinIO via aioboto3.

Both backends share one rule: an object is either complete or absent. Local files are written beside their
target and renamed into place; S3 uploads larger than one part go up as a multipart upload that is aborted on
any failure (cancellation included), so no half-written object and no orphaned parts are left behind. A process
killed mid-write cannot clean up; `remove_abandoned_writes` removes what it left once that has aged.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError

from core.config import Settings
from models.tenancy import DEFAULT_TENANT, tenant_of, workflow_id_of

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "ObjectStorage",
    "S3Storage",
    "StorageNotReady",
    "build_storage",
    "read_file_parts",
    "validate_key",
]

logger = logging.getLogger(__name__)

# S3 (and R2, MinIO) refuse multipart parts below 5 MiB, except the last one.
MIN_PART_BYTES = 5 * 1024 * 1024
COPY_BUFFER_BYTES = 1024 * 1024
# S3's own limit is 1024 bytes; file systems allow 255 per path segment, which the ids' pattern keeps to.
MAX_KEY_CHARS = 1024
# A local write builds `.<name>.<random>.part` beside its target, then renames it into place.
PART_SUFFIX = ".part"
# The most keys `keys_under` returns in one call.
LIST_LIMIT = 1000
_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
_MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# An unreachable bucket is an outage, not a failed provider call: an upload waits for it this long (retrying with
# backoff) instead of failing the activity, which Temporal would repeat, provider call (and its bill) included.
UPLOAD_OUTAGE_SECONDS = 300.0
UPLOAD_RETRY_MAX_DELAY_SECONDS = 10.0


# The top folders of every key this service writes (job_key_prefix, uploads_folder); a bucket may hold more.
IMAGES_FOLDER, UPLOADS_FOLDER, TENANTS_FOLDER = "images", "uploads", "tenants"
OWN_FOLDERS = tuple(f"{folder}/" for folder in (IMAGES_FOLDER, UPLOADS_FOLDER, TENANTS_FOLDER))


def job_key_prefix(canvas_id: str, job_id: str) -> str:
    """Where a job's outputs are stored: `{prefix}.png`, `{prefix}-1.png`, `{prefix}.thumb.webp`, ...; under
    `images/{workflowId}/` for the default tenant, `tenants/{tenant}/images/{workflowId}/` for others (a canvas key
    holds a `:`, which object keys do not)."""
    tenant = tenant_of(canvas_id)
    folder = f"{IMAGES_FOLDER}/{workflow_id_of(canvas_id)}"
    return f"{folder}/{job_id}" if tenant == DEFAULT_TENANT else f"{TENANTS_FOLDER}/{tenant}/{folder}/{job_id}"


def uploads_folder(tenant_id: str) -> str:
    """Where a tenant's uploads are stored: `uploads/` for the default tenant, `tenants/{tenant}/uploads/` else."""
    return UPLOADS_FOLDER if tenant_id == DEFAULT_TENANT else f"{TENANTS_FOLDER}/{tenant_id}/{UPLOADS_FOLDER}"


def validate_key(key: str) -> str:
    """Return `key` when it is a safe object key, raise ValueError otherwise.

    Safe means: relative, no `..`, no empty path segment, and only letters, digits and `._/-`, so that the
    same key is a valid S3 key, a valid URL path and a path that stays inside the local storage directory.
    """
    if not key:
        raise ValueError("object key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"object key is longer than {MAX_KEY_CHARS} characters")
    if not _KEY_CHARACTERS.fullmatch(key):
        raise ValueError(f"object key {key!r} may only contain letters, digits and . _ / -")
    if key.startswith("/") or ".." in key or "//" in key or key.endswith("/"):
        raise ValueError(f"object key {key!r} must be a relative path without '..' or empty segments")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """What storage knows of a stored object."""

    content_type: str
    size: int


class StorageNotReady(RuntimeError):
    """The bucket or directory cannot be used (missing, unreachable, not writable)."""


class ObjectStorage(ABC):
    """Where images live. Keys are validated by `validate_key`; writes are all-or-nothing."""

    @abstractmethod
    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key`, replacing any object already there."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's content type and size, or None when there is no such object."""

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    @abstractmethod
    async def keys_under(self, prefix: str) -> list[str]:
        """The keys that start with `prefix` (at most a thousand: callers use narrow prefixes)."""

    @abstractmethod
    async def url_for(self, key: str) -> str:
        """The URL a browser fetches the object from. It never expires: records and nodes keep it."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StorageNotReady unless objects can be stored (readiness probe)."""

    @abstractmethod
    async def remove_abandoned_writes(self, older_than_seconds: float) -> int:
        """Remove what writes left half done when their process was killed (their cleanup never ran) and that
        has not moved for `older_than_seconds`; returns how many went. Never touches a stored object."""

    async def aclose(self) -> None:
        """Release connections; the storage must not be used afterwards."""
        return None


class LocalStorage(ObjectStorage):
    """A directory on disk; `base_url` is where the API serves it (e.g. `http://host:8000/files`)."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")

    def local_path(self, key: str) -> Path:
        """The file that holds `key`; refuses keys that would leave the storage directory."""
        path = self.root / validate_key(key)
        # The key rules already forbid '..'; resolving also catches a symlink pointing outside the root.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"object key {key!r} points outside the storage directory")
        return path

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await asyncio.to_thread(_replace_atomically, path, self.local_path(key))

    async def put_new_file(self, key: str, path: Path) -> bool:
        """Store the file under `key` only if nothing is there yet (atomically: of two racing writers one wins);
        False when something already was."""
        return await asyncio.to_thread(_create_atomically, path, self.local_path(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.local_path(key).unlink, missing_ok=True)

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.local_path(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        # A directory has no room for per-file metadata; the extension decides, as it does when /files serves it.
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return ObjectInfo(content_type=content_type, size=size)

    async def keys_under(self, prefix: str) -> list[str]:
        folder, _, stem = validate_key(prefix).rpartition("/")
        directory = self.local_path(folder) if folder else self.root

        def listed() -> list[str]:
            if not directory.is_dir():
                return []
            names = sorted(path.name for path in directory.iterdir() if path.is_file())
            return [f"{folder}/{name}" if folder else name for name in names if name.startswith(stem)][:LIST_LIMIT]

        return await asyncio.to_thread(listed)

    async def url_for(self, key: str) -> str:
        return f"{self.base_url}/{validate_key(key)}"

    async def check(self) -> None:
        try:
            await asyncio.to_thread(_probe_writable, self.root)
        except OSError as exc:
            raise StorageNotReady(f"storage directory {self.root} is not writable: {exc}") from exc

    async def remove_abandoned_writes(self, older_than_seconds: float) -> int:
        return await asyncio.to_thread(_remove_stale_part_files, self.root, time.time() - older_than_seconds)


def _remove_stale_part_files(root: Path, cutoff: float) -> int:
    """Delete the hidden `.<name>.<random>.part` files a write was building (see below) last modified before
    `cutoff`: a write in progress keeps its file's mtime fresh, a killed one leaves it to age."""
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if not (name.startswith(".") and name.endswith(PART_SUFFIX)):
                continue
            path = Path(folder) / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # finished (renamed) or removed meanwhile
                continue
    return removed


def _replace_atomically(source: Path, target: Path) -> None:
    """Copy `source` to a temporary file beside `target`, then rename it over `target` in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, COPY_BUFFER_BYTES)
            out.flush()
            os.fsync(out.fileno())
            # mkstemp makes the file private; stored images are meant to be served.
            os.fchmod(out.fileno(), 0o644)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _create_atomically(source: Path, target: Path) -> bool:
    """Like `_replace_atomically`, but a hard link instead of a rename: it fails when `target` exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{PART_SUFFIX}")
    try:
        shutil.copyfile(source, temp)
        temp.chmod(0o644)
        try:
            os.link(temp, target)
        except FileExistsError:
            return False
        return True
    finally:
        temp.unlink(missing_ok=True)


def _probe_writable(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=root):
        pass


async def read_file_parts(path: Path, part_bytes: int) -> AsyncIterator[bytes]:
    """The file's content in parts of `part_bytes`, read off the event loop, one part in memory at a time."""
    with path.open("rb") as handle:
        while part := await asyncio.to_thread(handle.read, part_bytes):
            yield part


class S3Storage(ObjectStorage):
    """An S3-compatible bucket (AWS S3, Cloudflare R2, MinIO) through one long-lived aioboto3 client."""

    def __init__(self, settings: Settings) -> None:
        if not settings.S3_BUCKET:
            raise ValueError("S3_BUCKET is not set")
        if settings.S3_PART_BYTES < MIN_PART_BYTES:
            raise ValueError(f"S3_PART_BYTES must be at least {MIN_PART_BYTES} (the S3 minimum part size)")
        access_key, secret_key = settings.s3_credentials
        self.bucket = settings.S3_BUCKET
        self.part_bytes = settings.S3_PART_BYTES
        self.public_base_url = settings.S3_PUBLIC_BASE_URL.rstrip("/") if settings.S3_PUBLIC_BASE_URL else None
        # Without a public bucket URL, objects are reached through the API, which redirects to a fresh presigned GET.
        self.files_base_url = f"{settings.app_url}/files"
        self.presign_seconds = settings.S3_PRESIGN_SECONDS
        self.upload_outage_seconds = UPLOAD_OUTAGE_SECONDS
        self._endpoint_url = settings.s3_endpoint_url
        self._region = settings.S3_REGION
        self._session = aioboto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self._exit_stack = AsyncExitStack()
        self._client: S3Client | None = None
        self._client_lock = asyncio.Lock()

    async def _s3(self) -> S3Client:
        """The shared client, opened on first use (it binds to the running event loop)."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    # Custom endpoints (R2, MinIO, moto) are addressed by path: no per-bucket DNS names needed.
                    addressing = "path" if self._endpoint_url else "auto"
                    config = AioConfig(signature_version="s3v4", s3={"addressing_style": addressing})
                    client_context = self._session.client(
                        "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
                    )
                    self._client = await self._exit_stack.enter_async_context(client_context)
        return self._client

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        validate_key(key)
        deadline = time.monotonic() + self.upload_outage_seconds
        delay = 0.5
        while True:
            try:
                await self._put_once(key, path, content_type)
                return
            except (S3ConnectionError, HTTPClientError, ClientError) as exc:
                if not _is_outage(exc) or time.monotonic() + delay > deadline:
                    raise
                logger.warning("storage unavailable (%s); retrying the upload of %s in %.1fs", exc, key, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, UPLOAD_RETRY_MAX_DELAY_SECONDS)

    async def _put_once(self, key: str, path: Path, content_type: str) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= self.part_bytes:
            body = await asyncio.to_thread(path.read_bytes)
            client = await self._s3()
            await client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
            return
        await self._put_multipart(key, path, content_type)

    async def _put_multipart(self, key: str, path: Path, content_type: str) -> None:
        client = await self._s3()
        upload = await client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        upload_id = upload["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            part_number = 1
            async for part in read_file_parts(path, self.part_bytes):
                answer = await client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=part_number, Body=part
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": part_number})
                part_number += 1
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Shielded so that a second cancellation cannot leave the parts behind (they are billed).
            await asyncio.shield(self._abort_multipart(client, key, upload_id))
            raise

    async def _abort_multipart(self, client: S3Client, key: str, upload_id: str) -> bool:
        try:
            await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            logger.warning("could not abort multipart upload %s of %s; a lifecycle rule must clean it", upload_id, key)
            return False
        return True

    async def delete(self, key: str) -> None:
        client = await self._s3()
        await client.delete_object(Bucket=self.bucket, Key=validate_key(key))

    async def keys_under(self, prefix: str) -> list[str]:
        client = await self._s3()
        answer = await client.list_objects_v2(Bucket=self.bucket, Prefix=validate_key(prefix), MaxKeys=LIST_LIMIT)
        return [item["Key"] for item in answer.get("Contents", []) if "Key" in item]

    async def remove_abandoned_writes(self, older_than_seconds: float) -> int:
        """Abort our multipart uploads begun over `older_than_seconds` ago (a bucket lifecycle rule with
        AbortIncompleteMultipartUpload does the same; this works on stores without one). Uploads under other
        folders of a shared bucket are not ours to judge."""
        client = await self._s3()
        cutoff = time.time() - older_than_seconds
        aborted = 0
        for folder in OWN_FOLDERS:
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=folder)
            async for page in pages:
                for upload in page.get("Uploads", []):
                    key, upload_id, begun = upload.get("Key"), upload.get("UploadId"), upload.get("Initiated")
                    if key and upload_id and begun and begun.timestamp() < cutoff:
                        aborted += await self._abort_multipart(client, key, upload_id)
        return aborted

    async def head(self, key: str) -> ObjectInfo | None:
        client = await self._s3()
        try:
            answer = await client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_OBJECT_CODES:
                return None
            raise
        return ObjectInfo(
            content_type=answer.get("ContentType") or "application/octet-stream", size=answer["ContentLength"]
        )

    async def url_for(self, key: str) -> str:
        validate_key(key)
        return f"{self.public_base_url or self.files_base_url}/{key}"

    async def presigned_get(self, key: str) -> str:
        """A GET URL for `key` valid for S3_PRESIGN_SECONDS: handed out on each request, never stored."""
        client = await self._s3()
        return await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": validate_key(key)}, ExpiresIn=self.presign_seconds
        )

    async def presigned_put(self, key: str, content_type: str) -> str:
        """A PUT URL a browser uploads `key` to directly (the spec's pattern 3), valid for S3_PRESIGN_SECONDS."""
        client = await self._s3()
        return await client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": validate_key(key), "ContentType": content_type},
            ExpiresIn=self.presign_seconds,
        )

    async def check(self) -> None:
        try:
            client = await self._s3()
            await client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageNotReady(f"bucket {self.bucket} is not usable: {exc}") from exc

    async def aclose(self) -> None:
        async with self._client_lock:
            await self._exit_stack.aclose()
            self._client = None


def _is_outage(error: BotoCoreError | ClientError) -> bool:
    """Unreachable, cut off, or a 5xx (S3's 500 InternalError, 503 SlowDown): the bucket will be back."""
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return True


def build_storage(settings: Settings) -> ObjectStorage:
    """The storage the settings ask for: S3 when a bucket is configured (or forced), else the local directory."""
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.local_storage_dir, f"{settings.app_url}/files")
