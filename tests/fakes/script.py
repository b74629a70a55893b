"""What a fake provider route does next, queued by the test.

Behaviours, taken in order per route, "ok" once the queue is empty:
    "ok"            the provider's success answer
    ("status", code, body?, headers?)   exactly this answer (a dict or list body is sent as JSON)
    "slow"          wait until the client gives up (or `slow_seconds`), then answer "ok"
    "moderation"    the provider's content-policy refusal
    "all_filtered"  a success answer in which every image was filtered out (where the provider has one)
    "html"          200 with an HTML page instead of the promised answer
    "oversized"     a success answer whose image is `oversized_bytes` long
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response

NAMED_BEHAVIOURS = frozenset({"ok", "slow", "moderation", "all_filtered", "html", "oversized"})

Behaviour = str | tuple[Any, ...]


@dataclass(frozen=True)
class StatusAnswer:
    """A scripted ("status", code, body, headers) answer."""

    code: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """Per-route queues of behaviours, shared by the fake app and the test that drives it."""

    image_size: tuple[int, int] = (64, 64)
    oversized_bytes: int = 2 * 1024 * 1024
    slow_seconds: float = 30.0
    queues: dict[str, deque[Behaviour]] = field(default_factory=lambda: defaultdict(deque))

    def queue(self, route: str, *behaviours: Behaviour) -> None:
        for behaviour in behaviours:
            _validate(behaviour)
        self.queues[route].extend(behaviours)

    def next(self, route: str) -> Behaviour:
        queue = self.queues.get(route)
        return queue.popleft() if queue else "ok"

    def reset(self) -> None:
        self.queues.clear()
        self.image_size = (64, 64)
        self.oversized_bytes = 2 * 1024 * 1024
        self.slow_seconds = 30.0


def status_answer(behaviour: Behaviour) -> StatusAnswer | None:
    """The scripted status answer, or None for a named behaviour."""
    if isinstance(behaviour, str):
        return None
    _, code, *rest = behaviour
    body = rest[0] if rest else None
    headers = rest[1] if len(rest) > 1 else {}
    return StatusAnswer(code=int(code), body=body, headers=dict(headers))


HTML_PAGE = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>"


def scripted_response(behaviour: Behaviour) -> Response | None:
    """The answer a scripted status or the "html" behaviour gives at once; None when the route answers itself."""
    answer = status_answer(behaviour)
    if answer is not None:
        if isinstance(answer.body, dict | list):
            return JSONResponse(answer.body, answer.code, answer.headers)
        content = answer.body.encode() if isinstance(answer.body, str) else answer.body or b""
        return Response(content, answer.code, answer.headers)
    if behaviour == "html":
        return HTMLResponse(HTML_PAGE)
    return None


def _validate(behaviour: Behaviour) -> None:
    if isinstance(behaviour, str):
        if behaviour not in NAMED_BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; use one of {sorted(NAMED_BEHAVIOURS)} or a status")
    elif not (2 <= len(behaviour) <= 4 and behaviour[0] == "status"):
        raise ValueError(f"a status behaviour looks like ('status', code, body, headers), not {behaviour!r}")
