"""GroupProgress: rounds confirm a moment only once the group's committed offsets passed the end
offsets read at (input) and after (keyed-events) that moment. The offset source is faked: a
group whose ingest and aggregate stages commit with some delay, under continuous load."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from streams.progress import GroupProgress

IN = [TopicPartition("in", p) for p in range(2)]
KEYED = [TopicPartition("keyed", p) for p in range(2)]


class FakeGroup:
    """Ends and committed offsets the test moves by hand; counts requests."""

    def __init__(self) -> None:
        self.ends = dict.fromkeys([*IN, *KEYED], 0)
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.earliest: dict[TopicPartition, int] = {}
        self.requests = 0
        self.counts = {"in": 2, "keyed": 2}

    async def partitions(self, topics):
        self.requests += 1
        return {t: n for t, n in self.counts.items() if t in topics}

    async def committed(self):
        self.requests += 1
        return dict(self.committed_offsets)

    async def end_offsets(self, tps):
        self.requests += 1
        return {tp: self.ends[tp] for tp in tps}

    async def beginning_offsets(self, tps):
        self.requests += 1
        return {tp: self.earliest.get(tp, 0) for tp in tps}

    def refresh(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def produce(self, n: int = 10) -> None:
        """Records arrive in every input partition; the ingest forwards them later."""
        for tp in IN:
            self.ends[tp] += n

    def ingest_commits(self, stalled: TopicPartition | None = None) -> None:
        """The ingest read everything (but ``stalled``): forwarded it (keyed ends grow), then
        committed its input."""
        for tp in IN:
            if tp == stalled:
                continue
            if self.committed_offsets.get(tp, 0) < self.ends[tp]:
                for k in KEYED:
                    self.ends[k] += 1
            self.committed_offsets[tp] = self.ends[tp]

    def aggregate_commits(self) -> None:
        for tp in KEYED:
            self.committed_offsets[tp] = self.ends[tp]


def _progress(group: FakeGroup, clock) -> GroupProgress:
    return GroupProgress(group, ["in"], "keyed", clock=clock)


async def test_rounds_complete_under_continuous_load():
    """Ends move every tick and committed never equals end at one instant; each tick still
    confirms the moment of two ticks before, for two requests a tick."""
    group, now = FakeGroup(), [100.0]
    progress = _progress(group, lambda: now[0])
    confirmed = []
    for tick in range(8):
        group.requests = 0
        done = await progress.check(lambda t0: f"mark@{t0}")
        assert group.requests <= (2 if tick else 4)  # + partitions and earliest offsets at first
        if done is not None:
            confirmed.append(done)
        # between two ticks: the group commits what it had read, new records arrive
        group.aggregate_commits()
        group.ingest_commits()
        group.produce()
        now[0] += 1
    assert confirmed == [(t, f"mark@{t}") for t in (100.0, 101.0, 102.0, 103.0, 104.0, 105.0)]


async def test_a_stalled_worker_holds_every_round_back():
    group, now = FakeGroup(), [100.0]
    progress = _progress(group, lambda: now[0])
    assert await progress.check(lambda t0: t0) is None  # round at 100, empty partitions
    assert await progress.check(lambda t0: t0) is None  # its input read: keyed phase
    group.produce()  # one partition's reader stalls: it commits nothing from here on
    stalled = IN[1]
    for _ in range(3):
        now[0] += 1
        done = await progress.check(lambda t0: t0)
        assert done in (None, (100.0, 100.0))  # only the round from before the records
        group.aggregate_commits()
        group.ingest_commits(stalled)
    assert await progress.check(lambda t0: t0) is None
    group.ingest_commits()  # the stalled reader catches up: the rounds go on
    group.aggregate_commits()
    assert await progress.check(lambda t0: t0) is None  # input read: keyed phase
    group.aggregate_commits()
    done = await progress.check(lambda t0: t0)
    assert done is not None and done[0] > 100.0


async def test_partitions_without_a_commit():
    """Never written: read. Written and never committed: not read. All records deleted by
    retention before anyone read them: nothing to read."""
    group, now = FakeGroup(), [100.0]
    progress = _progress(group, lambda: now[0])
    group.ends[IN[0]] = 5  # records nobody has committed
    for _ in range(4):
        assert await progress.check(lambda t0: t0) is None
    group.earliest[IN[0]] = 5  # retention deleted them all
    now[0] += 30  # the earliest offsets are re-read
    assert await progress.check(lambda t0: t0) is None  # input read: keyed phase
    assert await progress.check(lambda t0: t0) == (100.0, 100.0)


async def test_nothing_before_the_topics_are_known():
    group, assigned = FakeGroup(), [False]
    progress = GroupProgress(group, ["in"], "keyed", lambda: assigned[0], clock=lambda: 1.0)
    assert await progress.check(lambda t0: t0) is None
    assert group.requests == 0  # not even a metadata request before the worker's assignment
    assigned[0] = True
    del group.counts["keyed"]
    assert await progress.check(lambda t0: t0) is None
    assert group.requests == 1
    group.counts["keyed"] = 2
    assert await progress.check(lambda t0: t0) is None  # a round starts
