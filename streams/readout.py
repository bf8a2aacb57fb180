"""The output seam: the per-window values of the scopes this worker owns, read by every sink.

The roll-up stage (:mod:`streams.rollup`) holds the finished rep, team and organisation values
of every live window of the roll-up partitions this worker owns, and numbers each change of a
window (its ``seq``). A sink reads through its own :class:`Reader`, at its own pace:
:meth:`Reader.changed` gives one :class:`WindowUpdate` per window that changed since that
reader's last read (however often it changed: reads coalesce), and once more, ``final``, a
window that closed (its end plus twice the grace period: no partial can change it any more).
A closed window is dropped when every reader has read it. :meth:`Reader.live` gives every live
window, for a sink that has to write everything again (Redis back after an outage).

Pull-based sinks (the Prometheus text) read :meth:`Readout.windows` at scrape time instead,
and the values only of the windows whose ``seq`` moved since their last scrape.
Adding a sink is one module under :mod:`streams.sinks` and one line in ``streams.app``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metrics.leads import UNASSIGNED
from metrics.windows import WINDOW_KINDS


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """One scope's values in one window, as a sink writes them."""

    scope: str  # rep, team or org
    id: str
    team: str | None  # a rep's team label; None for teams and the org
    kind: int  # index into metrics.windows.WINDOW_KINDS
    start: float
    end: float
    values: dict[tuple, float]  # {(kpi, *dims): value}; the stage's own dict: read only
    final: bool

    @property
    def window(self) -> str:
        return WINDOW_KINDS[self.kind]


class Reader:
    """One sink's position in the readout: the last change it has read."""

    def __init__(self, readout: Readout, name: str) -> None:
        self.readout = readout
        self.name = name
        self.seen = 0

    def changed(self) -> list[WindowUpdate]:
        """The windows changed (or closed) since this reader's last read."""
        return self.readout._read(self, everything=False)

    def pending(self) -> int:
        """How many windows :meth:`changed` would give now (without building them)."""
        return len(self.readout.changed_since(self.seen))

    def skip(self) -> None:
        """Mark every change read without building updates: for a sink that cannot write now
        and will write everything again later (Redis away), so closed windows can still go."""
        self.readout._skip(self)

    def live(self) -> list[WindowUpdate]:
        """Every window not closed yet, and the closed ones not read yet (final)."""
        return self.readout._read(self, everything=True)


class Readout:
    def __init__(self, stage: Any, *, grace_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.stage = stage  # streams.rollup.RollupStage
        self.grace = grace_seconds
        self.clock = clock
        self.readers: list[Reader] = []

    def reader(self, name: str) -> Reader:
        reader = Reader(self, name)
        self.readers.append(reader)
        return reader

    def windows(self) -> list[tuple[tuple[str, str, int, float], Any]]:
        """Every window the stage holds, as ((scope, id, kind, start), ScopeWindow): its
        ``seq``, ``values(catalog)`` and ``team()`` are read on the event loop only."""
        return list(self.stage.windows.items())

    def changed_since(self, seen: int) -> list[tuple[tuple[str, str, int, float], Any]]:
        """The windows changed after change number ``seen``, each once, newest first (see
        :meth:`windows`)."""
        return self.stage.changed_since(seen)

    def seq(self) -> int:
        """The number of the stage's last change."""
        return self.stage.seq

    def drops(self) -> int:
        """How many windows the stage dropped so far."""
        return self.stage.drops

    def dropped_since(self, drops: int) -> list[tuple[str, str, int, float]] | None:
        """The keys of the windows dropped after the first ``drops`` (None: no longer known)."""
        return self.stage.dropped_since(drops)

    def takeovers(self) -> int:
        """Grows each time the stage has read the partitions it was last given: a sink that
        must drop what this worker no longer holds (Redis) compares its state then."""
        return self.stage.takeovers

    def settled(self) -> bool:
        """Whether the stage holds every window of what it owns (not reading partitions it was
        just given): only then may a sink delete what the stage lacks."""
        return self.stage.settled()

    def owns(self, scope_id: str) -> bool:
        """Whether the scope (rep, team or org) with this id is this worker's to write."""
        return self.stage.owns(scope_id)

    def _close(self, now: float) -> None:
        self.stage.close_due(now)  # by the wall clock, or by event time (streams.rollup)

    def _skip(self, reader: Reader) -> None:
        self._close(self.clock())
        reader.seen = self.stage.seq
        self._drop_read()

    def _read(self, reader: Reader, *, everything: bool) -> list[WindowUpdate]:
        stage = self.stage
        self._close(self.clock())
        upto = stage.seq
        catalog = stage.catalog
        if everything:
            chosen = [(k, w) for k, w in stage.windows.items() if w.seq > reader.seen or not w.closed]
        else:
            # only what changed since the reader's last read, newest first: in the order of
            # their changes again
            chosen = stage.changed_since(reader.seen)
            chosen.reverse()
        out = []
        append = out.append
        for (scope, scope_id, kind, start), w in chosen:
            if w.update_seq == w.seq:
                append(w.update)  # another reader's, of the same change
                continue
            # a rep whose every source dropped it (tombstones) has no team label left
            team = (w.team() or UNASSIGNED) if scope == "rep" else None
            update = WindowUpdate(scope, scope_id, team, kind, start, w.end,
                                  w.values(catalog), w.closed)
            w.update, w.update_seq = update, w.seq
            append(update)
        reader.seen = upto
        self._drop_read()
        return out

    def _drop_read(self) -> None:
        """Forget the closed windows every reader has read (final)."""
        stage = self.stage
        if not stage.finals:
            return
        upto = min((r.seen for r in self.readers), default=stage.seq)
        windows = stage.windows
        stage.drop([k for k in stage.finals if windows[k].seq <= upto])
