"""Small stand-ins the stream-stage unit tests share (the integration tests use real brokers)."""

from __future__ import annotations

import asyncio


class Clock:
    """A clock that stands still until a test moves it (``clock.t += 60``)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def delivered() -> asyncio.Future:
    """A send's delivery future, already done (the broker acknowledged at once)."""
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut
