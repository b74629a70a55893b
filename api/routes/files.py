"""Stored images under one stable URL, /files/{key}, whatever the storage.

Local storage is served from disk. A bucket without a public URL is reached through here too: the answer is a
302 to a presigned GET made for this request, so a URL kept in a record or a node never expires. Browsers may
fetch from any origin (the spec: stored images carry CORS headers).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.deps import StateDep
from api.errors import ApiError
from core.storage import LocalStorage, S3Storage, validate_key

router = APIRouter(tags=["files"])

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
# Every file answer: readable from any origin, and never sniffed into something other than its type (an image
# that is also a page must not render as one).
FILE_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}
# A redirect may be cached while its presigned URL still has most of its life ahead.
REDIRECT_CACHE_FRACTION = 0.5


def _checked_key(key: str) -> str:
    try:
        return validate_key(key)
    except ValueError as error:
        raise ApiError(404, "file_not_found", f"No file {key[:200]!r}.") from error


@router.get(
    "/files/{key:path}",
    response_class=FileResponse,
    response_model=None,
    responses={302: {"description": "To a presigned URL of the bucket."}, 404: {"description": "No such file."}},
)
async def get_file(key: str, state: StateDep) -> FileResponse | RedirectResponse:
    """An image or thumbnail by its storage key."""
    storage = state.storage
    key = _checked_key(key)
    if isinstance(storage, S3Storage):
        seconds = int(storage.presign_seconds * REDIRECT_CACHE_FRACTION)
        return RedirectResponse(
            await storage.presigned_get(key),
            status_code=302,
            headers={**FILE_HEADERS, "Cache-Control": f"private, max-age={seconds}"},
        )
    assert isinstance(storage, LocalStorage)
    try:
        path = storage.local_path(key)
        found = path.is_file()
    except (ValueError, OSError) as error:
        raise ApiError(404, "file_not_found", f"No file {key[:200]!r}.") from error
    if not found:
        raise ApiError(404, "file_not_found", f"No file {key[:200]!r}.")
    return FileResponse(
        path,
        media_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={**FILE_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"},
    )
