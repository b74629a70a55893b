"""A minimal Server-Sent Events reader over httpx, for tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


async def read_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse `event:`, `data:` and `id:` fields; comments (keep-alives) are skipped."""
    async for event in parse_events(response.aiter_lines()):
        yield event


async def parse_events(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    """The events in a stream's lines (a response's `aiter_lines()`, possibly partly read already)."""
    event, data, event_id = "message", [], None
    async for line in lines:
        if line == "":
            if data:
                yield SseEvent(event=event, data="\n".join(data), id=event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
