"""Talking to the API from a shell: start, read and follow jobs over HTTP and SSE (httpx only, so it loads fast)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_CANVAS_ID = "cli-canvas"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_SECONDS = 0.5
# Open SSE streams would otherwise hold a stopping API process for as long as clients stay connected.


class ApiError(Exception):
    """The API refused a call (its JSON error carries `code` and `message`) or could not be reached (no status)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("code") or f"http_{response.status_code}"
            message = body.get("message") or body.get("detail") or response.reason_phrase
        else:
            code, message = f"http_{response.status_code}", response.text.strip() or response.reason_phrase
        return cls(str(code), str(message), response.status_code)

    @property
    def exit_code(self) -> int:
        """The caller's mistakes (4xx) and an unreachable API are usage errors; the server's own failures are not."""
        return EXIT_FAILED if self.status is not None and self.status >= 500 else EXIT_USAGE


class EventsUnavailable(Exception):
    """The API offers no event stream for this job; the caller polls instead."""


class JobsApi:
    """The few calls the CLI makes to the jobs API, over one pooled HTTP client."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The read timeout bounds the wait between SSE keep-alives, not a whole job.
        timeout = httpx.Timeout(10.0, read=60.0)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> JobsApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def start_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/v1/jobs", json=request)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    def typical_seconds(self, provider: str, model: str) -> float | None:
        """How long this provider and model's jobs took today (the median of GET /v1/stats), when known."""
        try:
            rows = self.call("GET", "/v1/stats").get("providers") or []
        except ApiError:
            return None  # a courtesy: the job is followed without it
        for row in rows:
            if (row.get("provider"), row.get("model")) == (provider, model) and row.get("p50Seconds") is not None:
                return float(row["p50Seconds"])
        return None

    def job_events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's SSE events as JSON objects, until the server ends the stream."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/events"
        with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                raise EventsUnavailable(f"{path} answered {response.status_code} {content_type}")
            yield from parse_sse(response.iter_lines())

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call: its JSON object, or ApiError with the API's code and message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                "api_unreachable",
                f"cannot reach the API at {self.base_url} ({error or type(error).__name__}); "
                "is `imagejobs dev` running? Use --api for another address",
            ) from error
        if response.is_error:
            raise ApiError.from_response(response)
        if response.status_code == 204:
            return {}
        body = response.json()
        if not isinstance(body, dict):
            raise ApiError("unexpected_response", f"{method} {path} answered {body!r}", response.status_code)
        return body


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Decode a text/event-stream into the JSON objects its events carry in `data`.

    Comments (keep-alives) and the `event`, `id` and `retry` fields are not needed to follow a job.
    """
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            try:
                event = json.loads("\n".join(data))
            except ValueError:
                event = None
            data = []
            if isinstance(event, dict):
                yield event
