"""The incremental /metrics renderer: never a stale value, and unchanged windows not formatted."""

from __future__ import annotations

from datetime import UTC, datetime

from metrics.catalog import Catalog
from metrics.partials import ENCODER, make_partial, partial_key
from metrics.rollup import Parts
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar
from streams.readout import Readout
from streams.rollup import RollupStage
from streams.sinks.prometheus import KpiRenderer, requested_names, write_pieces
from tests.unit.streams.fakes import Clock

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, 30, tzinfo=UTC).timestamp()  # mid-minute
GRACE = 300.0
MINUTE, HOUR, DAY = KIND_INDEX["minute"], KIND_INDEX["hour"], KIND_INDEX["day"]


def put(stage: RollupStage, scope: str, scope_id: str, kind: int, sums: dict, version: int,
        source: int = 0, team: str | None = "east", at: float | None = None) -> None:
    start, end = CAL.bounds(WINDOW_KINDS[kind], stage.clock() if at is None else at)
    partial = make_partial(scope, scope_id, kind, start, end, source, version,
                           Parts(sums=sums, samples={}), team if scope == "rep" else None)
    stage._apply(0, partial_key(scope, scope_id, kind, start, source), ENCODER.encode(partial))


def render(renderer: KpiRenderer, *args: object, **kwargs: object) -> str:
    body = renderer.render(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(body, bytes)  # what the /metrics handler sends, encoded once
    return body.decode()


def families(text: str) -> list[tuple[str, list[str]]]:
    """Per family (in order), its HELP/TYPE header and its sample lines sorted; every sample
    sits under its own family's header (the text format wants a family's lines together)."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            out.append((line, []))
        elif not line.startswith("# TYPE "):
            assert line.startswith(out[-1][0].split()[2] + "{"), line
            out[-1][1].append(line)
    return [(head, sorted(lines)) for head, lines in out]


def setup() -> tuple[Clock, RollupStage, Readout]:
    clock = Clock(T0)
    stage = RollupStage(CAT, topic="r", partitions=1, grace_seconds=GRACE,
                        consumer_factory=None, clock=clock)  # type: ignore[arg-type]
    return clock, stage, Readout(stage, grace_seconds=GRACE, clock=clock)


def from_scratch(readout: Readout, clock: Clock) -> list[tuple[str, list[str]]]:
    return families(render(KpiRenderer(CAT, CAL, readout, clock=clock)))


def test_a_render_after_changes_equals_a_render_from_scratch() -> None:
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    for kind in (MINUTE, DAY):
        put(stage, "rep", "ann", kind, {("calls_made",): 1.0, ("tool_uses", "crm"): 2.0}, 1)
        put(stage, "rep", "bob", kind, {("calls_made",): 4.0, ("calls_connected",): 1.0}, 1)
        put(stage, "team", "east", kind, {("calls_made",): 5.0}, 1)
        put(stage, "org", "org", kind, {("calls_made",): 5.0}, 1)
    assert families(render(kept)) == from_scratch(readout, clock)

    steps = [
        # a changed value, a new rep, a second source for a team
        lambda: (put(stage, "rep", "ann", DAY, {("calls_made",): 3.0}, 2),
                 put(stage, "rep", "cyd", MINUTE, {("emails_sent",): 1.0}, 1, team="west"),
                 put(stage, "team", "east", DAY, {("calls_made",): 2.0}, 1, source=1)),
        # a source drops its part (a tombstone before the grace ran out)
        lambda: stage._apply(0, partial_key("team", "east", DAY, CAL.bounds("day", clock())[0], 1),
                             None),
        # the minute moves on: last minute's stored KPIs at 0, then a value in the new minute
        lambda: setattr(clock, "t", clock.t + 60),
        lambda: put(stage, "rep", "ann", MINUTE, {("calls_made",): 7.0}, 1),
        # a rep changes team within the day
        lambda: put(stage, "rep", "bob", DAY, {("calls_made",): 5.0}, 2, team="west"),
        # two minutes on: the first minute is neither current nor previous any more
        lambda: setattr(clock, "t", clock.t + 120),
        # the stage gives a window away (a rebalance)
        lambda: stage.drop([("rep", "bob", DAY, CAL.bounds("day", clock())[0])]),
    ]
    for step in steps:
        step()
        assert families(render(kept)) == from_scratch(readout, clock)
        assert render(kept) == render(kept)

    text = render(kept)
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="day"} 3.0\n' in text
    assert 'salespulse_team_calls_made{team="east",window="day"} 5.0\n' in text
    assert 'salespulse_rep_calls_made{rep="bob",team="east",window="day"}' not in text
    assert 'window="minute"} 7.0' not in text  # two minutes ago: gone
    clock.t -= 120
    text = render(kept)
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="minute"} 7.0\n' in text
    assert 'salespulse_rep_emails_sent{rep="cyd",team="west",window="minute"} 0.0\n' in text


def test_unchanged_windows_are_not_formatted_again() -> None:
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    for rep in ("ann", "bob", "cyd"):
        for kind in (MINUTE, DAY):
            put(stage, "rep", rep, kind, {("calls_made",): 1.0}, 1)
    render(kept)
    formatted = kept.formatted
    assert formatted == 6  # one slot per rep and kind
    render(kept)
    assert kept.formatted == formatted  # nothing changed: nothing formatted
    put(stage, "rep", "bob", DAY, {("calls_made",): 2.0}, 2)
    assert 'rep="bob",team="east",window="day"} 2.0' in render(kept)
    assert kept.formatted == formatted + 1  # bob's day only
    clock.t += 60  # the minute moves on: each rep's minute slot again, the days stay
    assert 'rep="ann",team="east",window="minute"} 0.0' in render(kept)
    assert kept.formatted == formatted + 1 + 3


def test_a_late_change_to_the_previous_window_shows_in_its_lines_at_zero() -> None:
    """The previous window's lines at 0 are planned once per window and kept: a partial that
    still changes it (within the grace) must show."""
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    first_minute = clock.t
    put(stage, "rep", "ann", MINUTE, {("calls_made",): 2.0}, 1)
    put(stage, "rep", "ann", DAY, {("calls_made",): 2.0}, 1)
    clock.t += 60  # the minute moves on: last minute's calls_made at 0
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="minute"} 0.0\n' in render(kept)
    assert 'salespulse_rep_emails_sent{rep="ann",team="east",window="minute"}' not in render(kept)
    # a late partial of the first minute: emails_sent appears there, so at 0 in this minute
    put(stage, "rep", "ann", MINUTE, {("calls_made",): 2.0, ("emails_sent",): 1.0}, 2,
        at=first_minute)
    text = render(kept)
    assert 'salespulse_rep_emails_sent{rep="ann",team="east",window="minute"} 0.0\n' in text
    assert families(text) == from_scratch(readout, clock)
    put(stage, "rep", "ann", MINUTE, {("emails_sent",): 3.0}, 1)  # now this minute has one
    text = render(kept)
    assert 'salespulse_rep_emails_sent{rep="ann",team="east",window="minute"} 3.0\n' in text
    assert 'salespulse_rep_emails_sent{rep="ann",team="east",window="minute"} 0.0\n' not in text
    assert families(text) == from_scratch(readout, clock)


def test_label_values_with_percent_signs_and_escapes_are_written_as_they_are() -> None:
    """Lines are filled from templates ('%b' for the scope's labels, '%r' for the value): a
    '%' in any label value is text, not a placeholder."""
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    put(stage, "rep", "a%sb", DAY, {("calls_made",): 1.0, ("tool_uses", '100%"crm"\\'): 2.5}, 1,
        team="t%r")
    text = render(kept)
    assert 'salespulse_rep_calls_made{rep="a%sb",team="t%r",window="day"} 1.0\n' in text
    assert ('salespulse_rep_tool_uses{rep="a%sb",team="t%r",window="day",'
            'tool="100%\\"crm\\"\\\\"} 2.5\n') in text
    assert families(text) == from_scratch(readout, clock)


def test_values_are_written_as_their_repr_whatever_was_written_before() -> None:
    """A float's text is kept per value (:class:`_Texts`): equal values with different texts
    (0.0 and -0.0) and NaN are each written as their repr, as before."""
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    values = [0.0, -0.0, 3.0, float("nan"), float("inf"), -2.5, 0.1 + 0.2, 1e22]
    for i, value in enumerate(values * 2):
        put(stage, "rep", f"r{i}", DAY, {("calls_made",): value}, 1)
    text = render(kept)
    for i, value in enumerate(values * 2):
        assert f'salespulse_rep_calls_made{{rep="r{i}",team="east",window="day"}} {value!r}\n' in text


def test_an_older_capture_rendered_late_does_not_undo_a_newer_one() -> None:
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    put(stage, "rep", "ann", DAY, {("calls_made",): 1.0}, 1)
    older = kept.capture()
    put(stage, "rep", "ann", DAY, {("calls_made",): 2.0}, 2)
    assert 'window="day"} 2.0' in render(kept, kept.capture())
    assert 'window="day"} 2.0' in render(kept, older)  # two scrapes' threads, out of order


def test_name_filter_renders_only_the_named_families_from_the_same_cache() -> None:
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    put(stage, "rep", "ann", DAY, {("calls_made",): 1.0, ("emails_sent",): 2.0}, 1)
    put(stage, "team", "east", DAY, {("calls_made",): 1.0}, 1)
    only = render(kept, names=frozenset({"salespulse_rep_calls_made"}))
    assert [head for head, _ in families(only)] == [
        "# HELP salespulse_rep_calls_made " + CAT.by_name["calls_made"].help]
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="day"} 1.0\n' in only
    formatted = kept.formatted
    # a later full render serves the same cache: nothing formatted again, every family there
    full = render(kept)
    assert kept.formatted == formatted
    assert families(full) == from_scratch(readout, clock)
    assert 'salespulse_team_calls_made{team="east",window="day"} 1.0\n' in full
    # a change seen first by a filtered render shows in the next full one
    put(stage, "rep", "ann", DAY, {("calls_made",): 5.0, ("emails_sent",): 2.0}, 2)
    assert 'window="day"} 5.0\n' in render(kept, names={"salespulse_rep_calls_made"})
    assert families(render(kept)) == from_scratch(readout, clock)
    assert render(kept, names={"no_such_metric"}) == ""


def test_a_scrape_gets_the_cached_pieces_themselves_not_copies() -> None:
    """The /metrics handler writes the pieces a few at a time: no copy of the whole text per
    scrape (with 1,000 reps ~16 MB; each copy was as much again in the peak RSS)."""
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    put(stage, "rep", "ann", DAY, {("calls_made",): 1.0}, 1)
    put(stage, "rep", "bob", DAY, {("calls_made",): 2.0}, 1)
    first = kept.parts()
    assert all(type(p) is bytes for p in first)
    assert b"".join(first) == kept.render()
    put(stage, "rep", "bob", DAY, {("calls_made",): 3.0}, 2)
    second = kept.parts()
    ann = [p for p in first if b'rep="ann"' in p]
    assert ann and all(any(p is q for q in second) for p in ann)  # unchanged: the same objects
    assert b'rep="bob",team="east",window="day"} 2.0' in b"".join(first)  # an old list stays as it was
    assert b'rep="bob",team="east",window="day"} 3.0' in b"".join(second)


def test_write_pieces_join_parts_into_writes_of_about_the_size_in_order() -> None:
    parts = [bytes([65 + i % 26]) * 10 for i in range(1000)]
    writes = list(write_pieces(parts, size=100))
    assert b"".join(writes) == b"".join(parts)
    assert len(writes[0]) == 160  # 16 pieces, then as many as would have made the size
    assert {len(w) for w in writes[1:-1]} == {100} and len(writes[-1]) == 40  # (what is left)
    mixed = [b"a" * 3, b"", b"b" * 400, b"c" * 2, b"d" * 5, b"e"] * 50
    assert b"".join(write_pieces(mixed, size=64)) == b"".join(mixed)
    small_then_large = [b"s"] * 100 + [b"L" * 1000] * 100  # a write follows the pieces' size
    writes = list(write_pieces(small_then_large, size=4000))
    assert b"".join(writes) == b"".join(small_then_large)
    assert {len(w) for w in writes[-5:-1]} == {4000}
    assert b"".join(write_pieces([b""] * 40, size=6)) == b""
    assert list(write_pieces([], size=6)) == []


def test_requested_names_reads_repeated_name_parameters() -> None:
    from multidict import MultiDict

    assert requested_names(MultiDict()) is None
    assert requested_names(MultiDict([("name[]", "a"), ("name[]", "b"), ("x", "c")])) == {"a", "b"}
    assert requested_names({"name[]": "a"}) == {"a"}


def test_restricted_registry_keeps_named_families_of_collectors_without_describe() -> None:
    """The /metrics handler restricts the service's own registry (custom collectors without
    describe) with prometheus_client's restricted_registry, which sees such collectors only
    when the registry supports them (as streams.app builds it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Two:
        def collect(self):  # type: ignore[no-untyped-def]
            yield CounterMetricFamily("salespulse_events_duplicate", "d", value=3)
            yield GaugeMetricFamily("salespulse_state_keys", "k", value=7)

    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(Two())
    text = generate_latest(registry.restricted_registry({"salespulse_state_keys"})).decode()
    assert "salespulse_state_keys 7.0" in text and "duplicate" not in text


def planned_again(renderer: KpiRenderer) -> bytes:
    """The body after every slot's plan is made again from its windows (as a first render
    makes them): a kept plan must give exactly what a new one gives."""
    renderer._plans.clear()
    for slot in list(renderer._slots):
        renderer._format(slot)
    return renderer.render(renderer.capture())


def test_a_kept_plan_gives_what_a_new_plan_gives_after_any_change() -> None:
    """A slot's plan (its lines' templates, the positions of their labels and values) is kept
    while its windows keep their keys in order and their labels: new values reuse it; other
    keys, the same keys in another order, a new label or a window moving on make it again."""
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    first_minute = clock.t
    for kind in (MINUTE, DAY):
        put(stage, "rep", "ann", kind, {("calls_made",): 1.0, ("tool_uses", "crm"): 2.0,
                                        ("tool_uses", "mail"): 3.0}, 1)
        put(stage, "rep", "bob", kind, {("calls_made",): 4.0}, 1)
        put(stage, "team", "east", kind, {("calls_made",): 5.0}, 1)
    render(kept)
    steps = [
        # new values, the same keys: the plan stays
        lambda: put(stage, "rep", "ann", DAY, {("calls_made",): 7.0, ("tool_uses", "crm"): 8.0,
                                               ("tool_uses", "mail"): 9.0}, 2),
        # as many keys, another one among them
        lambda: put(stage, "rep", "ann", DAY, {("calls_made",): 7.0, ("tool_uses", "crm"): 8.0,
                                               ("emails_sent",): 1.0}, 3),
        # the same keys in another order
        lambda: put(stage, "rep", "ann", DAY, {("emails_sent",): 2.0, ("tool_uses", "crm"): 8.0,
                                               ("calls_made",): 7.0}, 4),
        # a value that is not a float is written as its repr
        lambda: put(stage, "rep", "bob", DAY, {("calls_made",): 6}, 2),
        # another team label
        lambda: put(stage, "rep", "bob", DAY, {("calls_made",): 6.0}, 3, team="west"),
        # the minute moves on: last minute's lines at 0, then a value in the new minute
        lambda: setattr(clock, "t", clock.t + 60),
        lambda: put(stage, "rep", "ann", MINUTE, {("calls_made",): 2.0}, 1),
        # a late partial of last minute with another key: its lines at 0 change
        lambda: put(stage, "rep", "ann", MINUTE, {("calls_made",): 1.0, ("emails_sent",): 1.0},
                    2, at=first_minute),
        # an hour window, then the hour moves on: the longer kinds' plans are made again
        lambda: put(stage, "rep", "ann", HOUR, {("calls_made",): 3.0, ("emails_sent",): 1.0}, 1),
        lambda: setattr(clock, "t", clock.t + 3600),
        lambda: put(stage, "rep", "ann", HOUR, {("calls_made",): 1.0}, 1),
        # labels holding the byte a slot's text is cut at between families
        lambda: put(stage, "rep", "c\x00d", DAY, {("calls_made",): 1.0}, 1, team="t\x00"),
        lambda: put(stage, "rep", "ann", DAY, {("tool_uses", "x\x00y"): 1.0,
                                               ("calls_made",): 2.0}, 5),
        lambda: put(stage, "rep", "ann", DAY, {("tool_uses", "x\x00y"): 3.0,
                                               ("calls_made",): 4.0}, 6),
    ]
    for step in steps:
        step()
        body = kept.render(kept.capture())
        assert body == planned_again(kept)
        assert families(body.decode()) == from_scratch(readout, clock)
    text = render(kept)
    assert 'salespulse_rep_calls_made{rep="bob",team="west",window="day"} 6.0\n' in text
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="day"} 4.0\n' in text
    assert 'tool="x\x00y"} 3.0\n' in text
    assert 'salespulse_rep_emails_sent{rep="ann",team="east",window="hour"} 0.0\n' in text
    assert 'salespulse_rep_calls_made{rep="ann",team="east",window="hour"} 1.0\n' in text


def test_a_value_that_is_not_a_float_is_written_as_its_repr_in_a_kept_plan() -> None:
    clock, stage, readout = setup()
    kept = KpiRenderer(CAT, CAL, readout, clock=clock)
    put(stage, "rep", "ann", DAY, {("calls_made",): 1.0}, 1)
    assert 'window="day"} 1.0\n' in render(kept)
    stage.windows[("rep", "ann", DAY, CAL.bounds("day", clock())[0])]._values = {
        ("calls_made",): 1}  # (equal to 1.0, whose text is cached)
    stage.touch(("rep", "ann", DAY, CAL.bounds("day", clock())[0]),
                stage.windows[("rep", "ann", DAY, CAL.bounds("day", clock())[0])])
    assert 'window="day"} 1\n' in render(kept)
