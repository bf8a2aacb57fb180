"""A mergeable quantile sketch that travels between stages: DDSketch's buckets, kept sparse.

Team and organisation quantiles are computed from the sketches of their parts (SPEC section 3:
"a quantile comes from merged sketches"). The bucket of a value is DDSketch's logarithmic
mapping (:class:`ddsketch.mapping.LogarithmicMapping`, the one ``DDSketch`` uses), and the
quantile follows ``DDSketch.get_quantile_value`` rank for rank, so a merged sketch answers
exactly what one DDSketch fed every value would. The buckets are a plain ``{key: count}`` dict:
a team's response times span a few dozen buckets, which a dense store would pad with thousands
of zeros on the wire. Sum and count ride along, so means are exact.
"""

from __future__ import annotations

from collections.abc import Iterable

from ddsketch.mapping import LogarithmicMapping

#: Relative accuracy of quantiles: a p90 of 600 s is reported within 594–606 s.
SKETCH_ACCURACY = 0.01
_MAPPING = LogarithmicMapping(SKETCH_ACCURACY)
_MIN = _MAPPING.min_possible


class Sketch:
    """Non-negative observations in DDSketch buckets, with their exact count and sum."""

    __slots__ = ("bins", "zeros", "count", "sum")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0
        self.sum = 0.0

    def add(self, value: float) -> None:
        if value > _MIN:
            key = _MAPPING.key(value)
            self.bins[key] = self.bins.get(key, 0) + 1
        else:
            self.zeros += 1
        self.count += 1
        self.sum += value

    def extend(self, values: Iterable[float]) -> Sketch:
        for v in values:
            self.add(v)
        return self

    def merge_from(self, other: Sketch) -> Sketch:
        """:meth:`merge`, returning the sketch (a copy: ``Sketch().merge_from(s)``)."""
        self.merge(other)
        return self

    def discard(self, values: Iterable[float]) -> Sketch:
        """Take back observations added before (the inverse of :meth:`extend`)."""
        bins = self.bins
        for v in values:
            if v > _MIN:
                key = _MAPPING.key(v)
                left = bins.get(key, 0) - 1
                if left > 0:
                    bins[key] = left
                else:
                    bins.pop(key, None)
            else:
                self.zeros -= 1
            self.count -= 1
            self.sum -= v
        return self

    def merge(self, other: Sketch) -> None:
        bins = self.bins
        for key, n in other.bins.items():
            bins[key] = bins.get(key, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """DDSketch's answer: the bucket holding rank ``q·(count−1)``, at its representative."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        rank -= self.zeros
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                return _MAPPING.value(key)
        return _MAPPING.value(max(self.bins))

    # -- wire form (msgpack-friendly) ------------------------------------------------------
    def encode(self) -> tuple[list[int], list[int], int, float]:
        return list(self.bins), list(self.bins.values()), self.zeros, self.sum

    @classmethod
    def decode(cls, raw: tuple | list) -> Sketch:
        keys, counts, zeros, total = raw
        sketch = cls()
        sketch.bins = dict(zip(keys, counts, strict=True))
        sketch.zeros = zeros
        sketch.count = zeros + sum(counts)
        sketch.sum = total
        return sketch
