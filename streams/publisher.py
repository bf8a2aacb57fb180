"""What an aggregate partition tells the world once its state is durable.

For every window that changed since the last publication (at most once per
``SALESPULSE_METRICS_INTERVAL_SECONDS`` per partition), and for every window that expired:

* one roll-up :class:`metrics.partials.Partial` per team and one for the organisation, to the
  internal ``<app_id>-rollup`` topic, in the partition of the team (crc32 of its id, like the
  keyed events) so that one worker merges each team's parts from every aggregate partition;
  tombstones when a team disappears from a window or the window expires (the topic is
  compacted: it holds the latest partial per team, window and source partition);
* one `sales.metrics` record per rep whose values changed (``final`` when the window expired).

Records are captured synchronously right after the partition's snapshot (or while it is clean),
so they reflect exactly the state that the snapshot makes durable, and are sent after it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from zlib import crc32

from metrics.catalog import Catalog
from metrics.partials import ENCODER, ORG_ID, make_partial, partial_key
from metrics.rollup import Parts, finish, merge, split
from metrics.snapshots import SnapshotFormat
from metrics.state import PartitionState, WindowPart

#: A partition publishes at most once per this many times its last publication's cost: in a
#: backlog, where every window changes all the time, publishing then takes a bounded share of the
#: loop (about 40 ms per 250 reps with all six windows changed), and live it keeps the interval.
PUBLISH_COST_FACTOR = 40.0

#: (topic, key, value or None for a tombstone, partition or None)
Record = tuple[str, bytes, bytes | None, int | None]


def scope_partition(scope_id: str, partitions: int) -> int:
    """The roll-up partition of a team (or the org): the same hash the ingest stage routes by."""
    return crc32(scope_id.encode()) % partitions


class Publisher:
    def __init__(
        self,
        catalog: Catalog,
        fmt: SnapshotFormat,
        *,
        partitions: int,
        rollup_topic: str,
        metrics_topic: str,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.fmt = fmt
        self.partitions = partitions
        self.rollup_topic = rollup_topic
        self.metrics_topic = metrics_topic
        self.interval = interval
        self.clock = clock
        self._next_at: dict[int, float] = {}
        #: (source partition, kind, start) -> teams with a partial in the roll-up topic
        self._published: dict[tuple[int, int, float], set[str]] = {}
        #: (source partition, rep, kind, start) -> hash of the rep's last published values
        self._rep_sent: dict[tuple[int, str, int, float], int] = {}

    def capture(self, partition: int, state: PartitionState) -> list[Record]:
        now = self.clock()
        expired = state.expired_windows
        if not expired and now < self._next_at.get(partition, float("-inf")):
            return []
        began = time.perf_counter()
        state.expired_windows = []
        changed, state.changed_windows = state.changed_windows, set()
        windows = state.windows
        out: list[Record] = []
        for wkey in sorted(changed):
            wpart = windows.get(wkey)
            if wpart is not None:
                self._window(out, partition, state, wpart, final=False, now=now)
        for wpart in expired:
            self._window(out, partition, state, wpart, final=True, now=now)
        cost = time.perf_counter() - began
        self._next_at[partition] = now + max(self.interval, PUBLISH_COST_FACTOR * cost)
        return out

    def forget(self, partition: int) -> None:
        """The partition went to another worker: its publication memory goes with it."""
        self._next_at.pop(partition, None)
        for key in [k for k in self._published if k[0] == partition]:
            del self._published[key]
        for key in [k for k in self._rep_sent if k[0] == partition]:
            del self._rep_sent[key]

    def _window(self, out: list[Record], partition: int, state: PartitionState, w: WindowPart,
                *, final: bool, now: float) -> None:
        reps, teams, org = split(w.values, w.samples, state.team_of)
        kind, start, end = w.kind, w.start, w.end
        version = state.applied
        topic, n = self.rollup_topic, self.partitions
        pkey = (partition, kind, start)
        before = self._published.pop(pkey, set())
        if final:
            for team in before | teams.keys():
                out.append((topic, partial_key("team", team, kind, start, partition), None,
                            scope_partition(team, n)))
            out.append((topic, partial_key("org", ORG_ID, kind, start, partition), None,
                        scope_partition(ORG_ID, n)))
        else:
            for team, parts in teams.items():
                out.append(self._partial("team", team, w, partition, version, parts))
            for team in before - teams.keys():
                out.append((topic, partial_key("team", team, kind, start, partition), None,
                            scope_partition(team, n)))
            out.append(self._partial("org", ORG_ID, w, partition, version, org))
            self._published[pkey] = set(teams)
        by_rep: dict[str, list[tuple[str, Parts]]] = {}
        for (rep, team), parts in reps.items():
            by_rep.setdefault(rep, []).append((team, parts))
        fmt = self.fmt
        for rep, entries in by_rep.items():
            team = state.team_of(rep) if len(entries) > 1 else entries[0][0]
            values = finish(self.catalog, merge(p for _, p in entries))
            skey = (partition, rep, kind, start)
            if final:
                self._rep_sent.pop(skey, None)
            else:
                digest = hash((team, frozenset(values.items())))
                if self._rep_sent.get(skey) == digest:
                    continue
                self._rep_sent[skey] = digest
            out.append((
                self.metrics_topic,
                fmt.key("rep", rep, kind, start),
                fmt.value("rep", rep, team, kind, start, end, values, final=final, now=now),
                None,
            ))

    def _partial(self, scope: str, scope_id: str, w: WindowPart, source: int, version: int,
                 parts: Parts) -> Record:
        partial = make_partial(scope, scope_id, w.kind, w.start, w.end, source, version, parts)
        return (
            self.rollup_topic,
            partial_key(scope, scope_id, w.kind, w.start, source),
            ENCODER.encode(partial),
            scope_partition(scope_id, self.partitions),
        )
