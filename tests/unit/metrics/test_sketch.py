"""The wire sketch answers exactly what one DDSketch fed every value answers, merged or not."""

from __future__ import annotations

import random

import pytest
from ddsketch import DDSketch

from metrics.sketch import SKETCH_ACCURACY, Sketch


@pytest.mark.parametrize("seed", range(20))
def test_quantiles_equal_ddsketch_fed_every_value_also_when_merged(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.choice([0.0, rng.expovariate(1 / 300), rng.uniform(0, 5)]) for _ in range(rng.randint(1, 400))]
    reference = DDSketch(relative_accuracy=SKETCH_ACCURACY)
    for v in values:
        reference.add(v)
    cut = rng.randint(0, len(values))
    left, right = Sketch().extend(values[:cut]), Sketch().extend(values[cut:])
    merged = Sketch.decode(left.encode())  # over the wire and back
    merged.merge(Sketch.decode(right.encode()))
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert merged.quantile(q) == pytest.approx(reference.get_quantile_value(q), rel=1e-12)
    assert merged.count == len(values)
    assert merged.sum == pytest.approx(sum(values))


def test_an_empty_sketch_has_no_quantile() -> None:
    assert Sketch().quantile(0.5) is None
