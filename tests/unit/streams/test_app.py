"""A send the producer refuses: a crash while the worker runs, the sender's end while it stops.

Faust stops the app's own timers and tasks (roll-up rounds, sinks, the lead judge) after its
producer. A round or an alert that came due in between was refused (``NotReady``) and, taken for
a failed delivery, crashed a worker that was stopping cleanly: CRITICAL in its log and a non-zero
exit (seen in 4 of ~60 bench logs). The producer here is the worker's real one, not started.
"""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

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


def test_a_worker_whose_lag_is_not_known_yet_is_neither_caught_up_nor_light() -> None:
    """Before its first fetch a worker knows no high water: its lag read 0, it counted as
    caught up (an idle snapshot and commit at start) and light, and once light it stayed
    settled through the backlog it had started on: the end of that backlog's live rounds ran
    every 0.1 s at four times their cost instead of every second at ten. Known and short, the
    lag is light again."""
    service = _service()
    service._committed_at = service.pacing.backlog_at + 1.0  # committed after the start
    highwater: dict[TP, int | None] = {}
    owned: list[TP] = []
    service._owned = lambda: owned  # type: ignore[method-assign]
    service.app.consumer.highwater = highwater.get  # type: ignore[method-assign]
    service._position = lambda tp: 0  # type: ignore[method-assign]
    assert not service._caught_up() and not service._light()  # nothing assigned yet
    owned[:] = [TP("sales.activities", 0), TP(service.keyed_topic_name, 0)]
    highwater[owned[1]] = 0  # one partition fetched, the other not yet
    assert not service._caught_up() and not service._light()
    highwater[owned[0]] = 50_000  # the backlog is known: behind, not light
    assert not service._caught_up() and not service._light() and service._behind()
    highwater[owned[0]] = 0  # read to the end and committed since: caught up, light
    assert service._caught_up() and service._light()
