"""The worker process' event loop: uvloop where it is installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core import event_loop


async def loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_worker_runs_on_uvloop_where_it_is_installed() -> None:
    assert event_loop.run(loop_module()).startswith("uvloop")


def test_without_uvloop_the_worker_runs_on_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import of a missing package meets
    assert event_loop.run(loop_module()).startswith("asyncio")
