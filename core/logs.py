"""Logging helpers shared by the API and the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """A warning at most once per `seconds`, saying how many like it were held back since the last one: for events
    a stranger can cause at any rate (forged webhooks), where a line each would flood the log."""

    def __init__(self, logger: logging.Logger, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._seconds = seconds
        self._clock = clock
        self._last: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log now, or count this one for the next line; True when it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._seconds:
            self._held_back += 1
            return False
        suffix = f" ({self._held_back} more like it since the last line)" if self._held_back else ""
        self._logger.warning(message + suffix, *args)
        self._last, self._held_back = now, 0
        return True
