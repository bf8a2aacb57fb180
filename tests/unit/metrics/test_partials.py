"""The roll-up wire format: a partial survives the round trip, and decoded partials share keys."""

from __future__ import annotations

from metrics import partials
from metrics.partials import DECODER, ENCODER, make_partial, shared_key
from metrics.rollup import Parts


def _partial(rep: str, source: int, calls: float) -> bytes:
    parts = Parts(sums={("calls_made",): calls, ("tool_uses", "dialer"): 2.0})
    return ENCODER.encode(make_partial("rep", rep, 2, 0.0, 86400.0, source, 7, parts, "t1"))


def test_round_trip_keeps_the_parts() -> None:
    decoded = DECODER.decode(_partial("r1", 3, 42.0))
    assert (decoded.scope, decoded.id, decoded.source, decoded.version, decoded.team) == (
        "rep", "r1", 3, 7, "t1")
    assert decoded.parts.sums == {("calls_made",): 42.0, ("tool_uses", "dialer"): 2.0}


def test_decoded_partials_share_their_key_tuples() -> None:
    # the roll-up stage keeps a partial per scope, window and source: one copy of each key
    a = DECODER.decode(_partial("r1", 0, 1.0)).parts.sums
    b = DECODER.decode(_partial("r2", 1, 5.0)).parts.sums
    for key_a, key_b in zip(sorted(a), sorted(b), strict=True):
        assert key_a == key_b and key_a is key_b
    assert b[("tool_uses", "dialer")] == 2.0


def test_the_shared_table_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(partials, "SHARED_KEYS_MAX", 3)
    partials._SHARED.clear()
    keys = [shared_key(("k", str(i))) for i in range(5)]
    assert len(partials._SHARED) <= 3
    assert [k[1] for k in keys] == ["0", "1", "2", "3", "4"]  # values are never lost
    assert shared_key(["k", "4"]) is keys[4]
