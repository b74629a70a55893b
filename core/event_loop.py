"""The event loop of the long-running processes.

uvloop where it is installed (it comes with uvicorn[standard] on Linux and macOS; uvicorn already runs the API on
it), else asyncio's own. A worker spends much of its CPU in the loop itself: handing tasks between Temporal's
core and Python, database sockets, timers. On uvloop the worker's CPU per job fell by about a fifth
(docs/benchmarks.md, figure 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")


def run(main: Coroutine[Any, Any, Result]) -> Result:
    """Run `main` to its end on a new event loop, as asyncio.run does."""
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return asyncio.run(main)
    return uvloop.run(main)
