"""Images kept in local storage, served under /files/{key} (S3/R2 serve their own URLs)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import StateDep
from api.errors import ApiError
from core.storage import LocalStorage

router = APIRouter(tags=["files"])

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


@router.get("/files/{key:path}", response_class=FileResponse, responses={404: {"description": "No such file."}})
async def get_file(key: str, state: StateDep) -> FileResponse:
    """An image or thumbnail from local storage."""
    storage = state.storage
    if not isinstance(storage, LocalStorage):
        raise ApiError(404, "not_found", "Files are served by the object store, not by this API.")
    try:
        path = storage.local_path(key)
    except ValueError as error:
        raise ApiError(404, "file_not_found", f"No file {key!r}.") from error
    if not path.is_file():
        raise ApiError(404, "file_not_found", f"No file {key!r}.")
    return FileResponse(
        path,
        media_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
