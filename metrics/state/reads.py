"""What the partition state answers: window sums and samples, health counters."""

from __future__ import annotations

from collections import Counter


class Reads:
    """The reads of :class:`metrics.state.PartitionState`."""

    def raw_window_values(self, kind: int, start: float) -> dict[tuple, float]:
        """Sums of one window keyed (kpi, rep, team, *dims), as stored: a team of None means
        the event named none (``rollup`` resolves it from the roster). The state's own dict:
        read it, don't change it."""
        part = self.windows.get((kind, start))
        return part.values if part is not None else {}

    def window_values(self, kind: int, start: float) -> dict[tuple, float]:
        """Sums of one window keyed (kpi, rep, team, *dims), teams resolved from the roster."""
        values = self.raw_window_values(kind, start)
        if not any(key[2] is None for key in values):
            return dict(values)
        out: dict[tuple, float] = {}
        for key, v in values.items():
            if key[2] is None:
                key = (key[0], key[1], self.team_of(key[1]), *key[3:])
            out[key] = out.get(key, 0.0) + v
        return out

    def window_samples(self, kind: int, start: float) -> dict[tuple, list[float]]:
        """Sample series of one window keyed (series, rep, team)."""
        part = self.windows.get((kind, start))
        return part.samples if part is not None else {}

    def drain_counters(self) -> tuple[Counter[str], int, int]:
        """Health counters since the last call: processed by type, duplicates, late."""
        out = (self.processed, self.duplicates, self.late)
        self.processed = Counter()
        self.duplicates = 0
        self.late = 0
        return out
