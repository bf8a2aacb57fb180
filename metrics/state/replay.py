"""The exact path: an event of a record replayed after a snapshot that was cut short.

Some parts (windows) of the restored state may already hold the record: its hits go only into
the windows whose stamp is below the record's offset, one window at a time. The hits are those
of the fast path (:mod:`metrics.state.fast_path`): the same generated accumulator
(``metrics.rules``), with the same admission of dimension values, in the same order.
"""

from __future__ import annotations

from typing import Any


class Replay:
    """The per-window path of :class:`metrics.state.PartitionState` (see :meth:`_apply_slow`)."""

    def _apply_slow(
        self, data: Any, accumulate: Any, rep: str | None, team: str | None, t: float, offset: int,
        replaying: bool, src_wm: float,
    ) -> None:
        # The same generated accumulator as the fast path: the same hits, and the same
        # admission of dimension values (metrics.labels), in the same order.
        hits: dict[tuple, float] = {}
        if not accumulate(data, rep, team, hits, self._admit):
            return
        kinds_of = self.catalog.kinds_of
        self._fold_pending()
        was_late = False
        for kind, (start, end) in enumerate(self.calendar.bounds_all(t)):
            if not self._open(end, src_wm):
                was_late = True
                continue
            wpart = self._window(kind, start, end)
            if replaying and wpart.stamp >= offset:
                continue
            values = wpart.values
            touched = False
            for key, value in hits.items():
                if kind in kinds_of[key[0]]:
                    values[key] = values.get(key, 0.0) + value
                    touched = True
            if touched:
                self._mark(wpart, {(k[1], k[2]) for k in hits})
        if was_late:
            self.late += 1
