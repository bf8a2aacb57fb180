"""Each KPI's rule is compiled from one source (metrics.rules): the accumulator that the state's
fast path and replay run, and the per-entry functions of its hooks, give the same hits."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from metrics.catalog import KPI, PRESENT, Catalog
from metrics.events import DATA_TYPES, CallCompleted, UserEvent, Validator
from streams.demo.mix import SalesFloor

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def admit_capped(cap: int):
    """An admission like a capped state's: the first ``cap`` values per label, then ``other``;
    records every call, so two paths can be compared call for call."""
    admitted: dict[str, list[str]] = {}
    calls: list[tuple[str, str]] = []

    def admit(label: str, value: str) -> str:
        calls.append((label, value))
        seen = admitted.setdefault(label, [])
        if value in seen:
            return value
        if len(seen) < cap:
            seen.append(value)
            return value
        return "other"

    return admit, calls


def hits_by_rules(catalog: Catalog, etype: str, data, rep, team, admit) -> dict[tuple, float]:
    """The hits of one event computed from the per-entry functions, entry by entry."""
    out: dict[tuple, float] = {}
    seen: dict[str, str] = {}  # dimension values are admitted once per event

    def once(label: str, value: str) -> str:
        if label not in seen:
            seen[label] = admit(label, value)
        return seen[label]

    for rule in catalog.rules_by_type.get(etype, ()):
        if rule.match(data):
            key = (rule.kpi, rep, team, *rule.dims(data, once))
            out[key] = out.get(key, 0.0) + rule.value(data)
    return out


def test_the_accumulator_and_the_rules_agree_on_the_demo_floor():
    catalog = Catalog()
    validator = Validator()
    checked: Counter[str] = Counter()
    for i, record in enumerate(SalesFloor(seed=3, start=START).events(45_000)):
        event = validator.decode(record.value, i, START.timestamp() + 86400)
        data = event.data
        assert not isinstance(data, UserEvent)
        etype = event.type
        accumulate = catalog.accumulators.get(etype)
        if accumulate is None:
            continue
        rep, team = getattr(data, "rep_id", None), getattr(data, "team_id", None)
        admit_a, calls_a = admit_capped(3)
        admit_b, calls_b = admit_capped(3)
        bucket: dict[tuple, float] = {}
        n = accumulate(data, rep, team, bucket, admit_a)
        expected = hits_by_rules(catalog, etype, data, rep, team, admit_b)
        assert bucket == expected, etype
        assert n == sum(1 for r in catalog.rules_by_type.get(etype, ()) if r.match(data))
        assert calls_a == calls_b  # the same admissions, in the same order
        checked[etype] += bool(bucket)
    # the demo floor exercised every event type that has stored KPIs
    assert {t for t in catalog.rules_by_type if t in DATA_TYPES} <= set(checked) | {"rep.updated"}
    assert sum(checked.values()) > 20_000


def test_a_distinct_count_keys_each_value_and_skips_unset_values():
    catalog = Catalog([
        KPI(name="leads_called", help="h", aggregation="distinct", types=("call.completed",),
            fields=("lead_id",), where={"direction": "outbound"}),
        KPI(name="with_customer", help="h", aggregation="count", types=("call.completed",),
            where={"customer_id": PRESENT}),
    ])
    accumulate = catalog.accumulators["call.completed"]
    rules = {r.kpi: r for r in catalog.rules_by_type["call.completed"]}
    for call, hits in [
        (CallCompleted("r", "outbound", "busy", lead_id="l-1"), {("leads_called", "r", None, "l-1"): 1.0}),
        (CallCompleted("r", "outbound", "busy"), {}),
        (CallCompleted("r", "inbound", "busy", lead_id="l-1", customer_id="c"),
         {("with_customer", "r", None): 1.0}),
    ]:
        bucket: dict[tuple, float] = {}
        accumulate(call, "r", None, bucket)
        assert bucket == hits
        assert {(k, "r", None, *r.dims(call)): r.value(call)
                for k, r in rules.items() if r.match(call)} == hits
