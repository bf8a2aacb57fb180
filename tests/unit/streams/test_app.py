"""A send the producer refuses: a crash while the worker runs, the sender's end while it stops.

Faust stops the app's own timers and tasks (roll-up rounds, sinks, the lead judge) after its
producer. A round or an alert that came due in between was refused (``NotReady``) and, taken for
a failed delivery, crashed a worker that was stopping cleanly: CRITICAL in its log and a non-zero
exit (seen in 4 of ~60 bench logs). The producer here is the worker's real one, not started.
"""

from __future__ import annotations

import asyncio

import pytest

from streams.app import Service
from streams.settings import Settings


def _service() -> Service:
    return Service(Settings(app_id="send-test", redis_url=""))


def test_a_send_refused_while_the_worker_stops_ends_the_sender_without_a_crash() -> None:
    async def scenario() -> None:
        service = _service()
        crashes: list[BaseException] = []
        service.app.crash = lambda exc: crashes.append(exc)  # type: ignore[method-assign,assignment,return-value]
        service.app._stopped.set()  # the worker is stopping
        with pytest.raises(asyncio.CancelledError):
            await service._send("sales.metrics", key=b"k", value=b"v")
        assert crashes == []
        assert service.app.commit_refusal() is not None  # and nothing is committed after it

    asyncio.run(scenario())


def test_a_send_refused_while_the_worker_runs_stops_it_before_any_commit() -> None:
    async def scenario() -> None:
        service = _service()
        with pytest.raises(Exception, match="not yet started"):
            await service._send("sales.metrics", key=b"k", value=b"v")
        await asyncio.sleep(0)
        assert service.app.commit_refusal() is not None
        assert service.app._crashed.is_set() or service.app._fail_task is not None

    asyncio.run(scenario())
