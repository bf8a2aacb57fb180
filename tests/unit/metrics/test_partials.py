"""The roll-up wire format: a partial survives the round trip, decoded partials share keys, and the
roll-up stage holds them packed."""

from __future__ import annotations

from metrics import partials
from metrics.partials import DECODER, ENCODER, make_partial, shared_key, shared_label
from metrics.rollup import Parts
from metrics.sketch import Sketch


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


def test_held_parts_are_packed_and_give_the_parts_back() -> None:
    """The roll-up stage holds each source's partial packed (its tuple of sums beside shared key
    tuples, one shared team label), and the dict form it builds to finish a window is the
    decoded partial's parts."""
    a = DECODER.decode(_partial("r1", 0, 1.5)).held()
    b = DECODER.decode(_partial("r2", 1, 5.0)).held()
    assert a.sums == (1.5, 2.0) and type(a.keys) is tuple  # tuples: untracked by the GC
    assert all(x is y for x, y in zip(a.keys, b.keys, strict=True))
    assert a.team == b.team == "t1" and a.team is b.team
    assert (a.epoch, a.version) == (0, 7)
    decoded = DECODER.decode(_partial("r1", 0, 1.5))
    assert a.parts() == decoded.parts
    assert list(a.parts().sums) == list(decoded.parts.sums)  # in the partial's order


def test_held_parts_keep_samples_and_sketches() -> None:
    sketch = Sketch().extend([1.0, 2.0, 3.0])
    parts = Parts(sums={("calls_made",): 1.0}, samples={"lead_response_seconds": [4.0, 2.0]},
                  sketches={"talk_seconds": sketch})
    held = DECODER.decode(ENCODER.encode(
        make_partial("team", "t1", 2, 0.0, 86400.0, 0, 1, parts))).held()
    back = held.parts()
    assert back.samples == {"lead_response_seconds": [4.0, 2.0]}
    assert back.sketches["talk_seconds"].count == 3
    assert back.sketches["talk_seconds"].quantile(0.5) == sketch.quantile(0.5)
    assert held.team is None


def test_the_shared_labels_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(partials, "LABELS_MAX", 2)
    partials._LABELS.clear()
    labels = [shared_label(f"rep-{i}") for i in range(4)]
    assert len(partials._LABELS) <= 2
    assert labels == ["rep-0", "rep-1", "rep-2", "rep-3"]
    assert shared_label("".join(["rep-", "3"])) is labels[3]  # an equal, new str
