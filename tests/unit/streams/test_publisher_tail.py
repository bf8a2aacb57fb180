"""The end of a backlog: its costliest publication round waits until what the worker applied
before it is durable, and only that one round.

When a backlog ends, the next round of roll-up partials reads every window the backlog changed
(1,000 reps and 33 minutes of history: ~220,000-370,000 keys, 1-2 s of the loop) and fills the
producer with partials. When it ran before the backlog's last records were snapshotted, its
partials went ahead of that snapshot: in 8 of 24 benchmark runs of the same commit the backlog
took 2-7 s longer to be durable and committed (0.15-0.22 of bare instead of 0.28-0.41) and the
worker peaked at 315-338 MB instead of ~220 MB (docs/benchmark.md, "The end of a backlog").
"""

from __future__ import annotations

import time

from faust.types import TP

from streams.app import Service
from streams.pacing import SETTLED
from streams.publisher import TAIL_KEYS, Publisher
from streams.settings import Settings
from tests.unit.streams.fakes import Clock


class Asked:
    """A ``tail`` predicate that answers ``answer[0]`` and counts the questions."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


def _publisher(tail: Asked, behind: bool = False) -> Publisher:
    return Publisher(partitions=4, rollup_topic="r", interval=0.0, clock=Clock(1000.0),
                     tail=tail, behind=lambda: behind)


def test_a_costly_round_waits_while_the_tail_is_not_durable() -> None:
    tail = Asked(True)
    publisher = _publisher(tail)
    assert not publisher.due(lambda: TAIL_KEYS)
    assert not publisher.due(lambda: 10 * TAIL_KEYS)  # asked again at the next tick
    tail.answer = False  # what was applied before it is durable: the round runs at once
    assert publisher.due(lambda: TAIL_KEYS)


def test_a_small_round_does_not_ask() -> None:
    """A few reps changed at the end of a backlog show as soon as they would have."""
    tail = Asked(True)
    assert _publisher(tail).due(lambda: TAIL_KEYS - 1)
    assert tail.asked == 0


def test_a_round_the_pacing_holds_does_not_ask_either() -> None:
    tail = Asked(True)
    publisher = _publisher(tail)
    publisher.rounds.done(1000.0, 1.0)  # a round just took a second: the next is ten out
    assert not publisher.due(lambda: TAIL_KEYS)
    assert tail.asked == 0


def test_the_keys_are_counted_once_per_question() -> None:
    """Behind, the pacing counts the round's keys too; counting them is work (every changed
    window's keys): once is enough."""
    counted = []

    def keys() -> int:
        counted.append(1)
        return TAIL_KEYS

    publisher = _publisher(Asked(False), behind=True)
    # its work, 0.1 s at the unit cost, is paced ten times that from the publisher's start
    publisher.clock.t += 2.0  # type: ignore[attr-defined]
    assert publisher.due(keys)
    assert len(counted) == 1


def _service() -> tuple[Service, Clock, dict[TP, int | None], list[TP]]:
    service = Service(Settings(app_id="tail-test", redis_url=""))
    clock = Clock(time.monotonic())  # the pacing's start: a backlog assumed, as of now
    service.pacing.clock = clock
    highwater: dict[TP, int | None] = {}
    owned = [TP("sales.activities", 0), TP(service.keyed_topic_name, 0)]
    service._owned = lambda: owned  # type: ignore[method-assign]
    service.app.consumer.highwater = highwater.get  # type: ignore[method-assign]
    service._position = lambda tp: 0  # type: ignore[method-assign]
    return service, clock, highwater, owned


def _backlog(service: Service, clock: Clock, highwater: dict[TP, int | None], owned: list[TP]) -> None:
    """A backlog the pacing has seen for longer than a blip, then read to its end."""
    highwater.update({owned[0]: 150_000, owned[1]: 0})
    service.pacing.gap(0.1, 0.01)
    clock.t += 3.0
    service.pacing.gap(0.1, 0.01)
    assert service.pacing.backlog_at == clock.t
    assert not service._backlog_tail()  # behind: the backlog's own pacing holds
    highwater[owned[0]] = 0


def test_the_first_costly_round_after_a_backlog_waits_for_one_flush_begun_after_it() -> None:
    service, clock, highwater, owned = _service()
    aggregate = service.aggregate
    aggregate.held[0] = [object()]  # records applied, their snapshot not acknowledged yet
    _backlog(service, clock, highwater, owned)
    aggregate.flushes_begun = aggregate.flushes = 7
    assert service._backlog_tail()  # asked: it waits
    aggregate.flushes_begun = 8  # a flush began (after the question): not done yet
    assert service._backlog_tail()
    aggregate.flushes = 8  # done: what was applied before the question is durable
    aggregate.held[0] = []
    assert not service._backlog_tail()
    aggregate.held[0] = [object()]  # records keep coming: no later round waits for them
    assert not service._backlog_tail()


def test_a_round_waits_for_nothing_when_nothing_was_held() -> None:
    service, clock, highwater, owned = _service()
    _backlog(service, clock, highwater, owned)
    assert not service._backlog_tail()
    service.aggregate.held[0] = [object()]
    assert not service._backlog_tail()  # this backlog's end had its round


def test_no_round_waits_longer_than_settled_after_the_backlog_and_the_next_backlog_asks_again() -> None:
    service, clock, highwater, owned = _service()
    aggregate = service.aggregate
    aggregate.held[0] = [object()]
    _backlog(service, clock, highwater, owned)
    assert service._backlog_tail()
    clock.t += SETTLED - 0.1
    assert service._backlog_tail()  # no snapshot done since (a broker away, say)
    clock.t += 0.2
    assert not service._backlog_tail()  # waited long enough: the round runs
    _backlog(service, clock, highwater, owned)  # another backlog, its records held
    assert service._backlog_tail()
