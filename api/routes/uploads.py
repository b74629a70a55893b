"""Your own images onto a board (the spec's pattern 3): ask for an upload URL, PUT the bytes there, use the file URL.

`POST /v1/uploads {contentType, bytes}` answers `{uploadUrl, fileUrl}`. With S3/R2 the upload URL is a presigned
PUT, so the browser sends the bytes straight to the bucket (its CORS must allow PUT from the canvas' origin; the
docker-compose bucket does). With local storage it is `PUT /v1/uploads/{name}?...&token=` here, signed like a
presigned URL. Either way the image is refused again where it is used: an input image is fetched SSRF-guarded,
size-capped and sniffed (providers.input_images).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from api.auth import CallerDep
from api.deps import StateDep
from api.errors import ApiError
from core.images import TooManyPixels, measure, verify_whole
from core.ingest import sniff_image_kind
from core.storage import LocalStorage, S3Storage, uploads_folder
from core.thumbnails import Undecodable
from models.schemas import ID_PATTERN, CamelModel, ErrorBody, RequestModel
from models.tenancy import DEFAULT_TENANT

UploadType = Literal["image/png", "image/jpeg", "image/webp"]
EXTENSIONS: dict[str, str] = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_URL_SECONDS = 900
UPLOAD_TOKEN_LABEL = "upload:"

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
# The PUT is authenticated by its signed URL, as a presigned S3 URL is, so a browser can send the file alone.
signed_router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


class UploadRequest(RequestModel):
    content_type: UploadType
    bytes: int = Field(gt=0, le=MAX_UPLOAD_BYTES, description=f"The file's size; at most {MAX_UPLOAD_BYTES} bytes.")


class UploadTicket(CamelModel):
    upload_url: str = Field(description="PUT the file's bytes here, with the same Content-Type.")
    file_url: str = Field(description="Where the file will be: use it as a node's image or as previousImage.")
    expires_at: int = Field(description="Unix seconds after which uploadUrl is refused.")


def upload_token(secret: str, tenant_id: str, name: str, content_type: str, size: int, expires_at: int) -> str:
    message = f"{UPLOAD_TOKEN_LABEL}{tenant_id}:{name}:{content_type}:{size}:{expires_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@router.post("", status_code=201, response_model=UploadTicket, responses={422: {"model": ErrorBody}})
async def create_upload(body: UploadRequest, state: StateDep, caller: CallerDep) -> UploadTicket:
    """Where to PUT an image of `bytes` bytes, and where it will then be (in the caller's tenant's folder)."""
    name = f"{uuid.uuid4().hex}.{EXTENSIONS[body.content_type]}"
    key = f"{uploads_folder(caller.tenant_id)}/{name}"
    expires_at = int(time.time()) + UPLOAD_URL_SECONDS
    storage = state.storage
    if isinstance(storage, S3Storage):
        upload_url = await storage.presigned_put(key, body.content_type)
    else:
        tenant = caller.tenant_id
        token = upload_token(state.settings.WEBHOOK_SECRET, tenant, name, body.content_type, body.bytes, expires_at)
        upload_url = (
            f"{state.settings.app_url}/v1/uploads/{name}?contentType={body.content_type}"
            f"&bytes={body.bytes}&expires={expires_at}&tenant={tenant}&token={token}"
        )
    return UploadTicket(upload_url=upload_url, file_url=await storage.url_for(key), expires_at=expires_at)


@signed_router.put(
    "/{name}",
    status_code=204,
    responses={
        401: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "This upload URL was used already; ask for a new one."},
        413: {"model": ErrorBody},
        415: {"model": ErrorBody, "description": "Not one whole image of the announced type, within the limits."},
    },
)
async def receive_upload(
    name: str,
    request: Request,
    state: StateDep,
    content_type: Annotated[UploadType, Query(alias="contentType")],
    size: Annotated[int, Query(alias="bytes", gt=0, le=MAX_UPLOAD_BYTES)],
    expires: Annotated[int, Query()],
    token: Annotated[str, Query(max_length=128)],
    tenant: Annotated[str, Query(pattern=ID_PATTERN)] = DEFAULT_TENANT,
) -> Response:
    """The bytes of an upload this API handed out (local storage), once: a second PUT to the same URL gets 409 and
    never replaces a file served as immutable. Refused (415) unless they are one whole image of the announced type
    within MAX_IMAGE_PIXELS, measured from its header and checked without decoding it."""
    expected = upload_token(state.settings.WEBHOOK_SECRET, tenant, name, content_type, size, expires)
    if not hmac.compare_digest(expected.encode(), token.encode()) or expires < time.time():
        raise ApiError(401, "invalid_upload_url", "This upload URL is wrong or expired; ask POST /v1/uploads again.")
    storage = state.storage
    assert isinstance(storage, LocalStorage)  # S3 and R2 uploads go straight to the bucket (presigned PUT)
    key = f"{uploads_folder(tenant)}/{name}"
    if await storage.exists(key):
        raise _used_already()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        await _receive_at_most(request, path, size)
        await asyncio.to_thread(_check_image, path, content_type, state.settings.MAX_IMAGE_PIXELS)
        if not await storage.put_new_file(key, path):
            raise _used_already()
    return Response(status_code=204)


def _used_already() -> ApiError:
    return ApiError(409, "upload_url_used", "This upload URL was used already; ask POST /v1/uploads for another.")


def _check_image(path: Path, content_type: str, max_pixels: int) -> None:
    """415 unless `path` is one whole image of `content_type` (nothing after its end) within `max_pixels`."""
    with path.open("rb") as file:
        kind = sniff_image_kind(file.read(16))
    if kind is None or kind.content_type != content_type:
        raise ApiError(415, "not_the_announced_image", f"The bytes are not a {content_type} image.")
    try:
        measure(path, kind.pillow_format, max_pixels)
        verify_whole(path, kind.pillow_format)
    except TooManyPixels as error:
        raise ApiError(415, "image_too_large", f"The image cannot be used: {error}.") from error
    except Undecodable as error:
        message = f"The bytes are not one whole {content_type} image: {error}."
        raise ApiError(415, "not_the_announced_image", message) from error


async def _receive_at_most(request: Request, path: Path, limit: int) -> int:
    received = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ApiError(413, "payload_too_large", f"This upload was announced as {limit} bytes.")
            out.write(chunk)
    return received
