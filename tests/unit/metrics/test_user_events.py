"""Event types declared in a user catalog, and min / max / last: the competitor pricing example
(the latest observed price per competitor and product, from `competitor.price_observed`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metrics.catalog import CatalogError
from metrics.events import Bundle, RejectedEvent, UserEvent, Validator
from metrics.rollup import finish, merge, split
from metrics.state import PartitionState
from metrics.user_catalog import build_catalog
from metrics.windows import KIND_INDEX, Calendar

CAL = Calendar("UTC")
T0 = 1_780_000_000.0
DAY = KIND_INDEX["day"]
PRICES = (Path(__file__).resolve().parents[3] / "docs" / "examples" / "competitor-pricing.yml").read_text()


def record(t: float, i: int, **data) -> bytes:
    stamp = datetime.fromtimestamp(t, UTC).isoformat()
    return json.dumps({"specversion": "1.0", "id": f"p{i}", "source": "scraper", "type":
                       "competitor.price_observed", "time": stamp, "data": data}).encode()


def observations():
    # (time, competitor, product, price, rep) in arrival order: one arrives late
    return [(T0 + 10, "acme", "pro", 120.0, "ann"), (T0 + 30, "acme", "pro", 99.0, "bob"),
            (T0 + 20, "acme", "pro", 150.0, "ann"), (T0 + 5, "globex", "pro", 80.0, "bob"),
            (T0 + 40, "acme", "basic", 20.0, "ann")]


def test_competitor_prices_from_a_declared_event_type():
    cat = build_catalog(PRICES, "kpis.yml")
    v = Validator()
    events = [v.decode(record(t, i, competitor=c, product=p, price=x, rep_id=r), i, T0 + 60)
              for i, (t, c, p, x, r) in enumerate(observations())]
    assert all(isinstance(e.data, UserEvent) for e in events)  # wrapped between the stages
    # two partitions (ann's and bob's), merged like the roll-up stage does
    parts = []
    for rep in ("ann", "bob"):
        state = PartitionState(cat, CAL)
        state.apply(Bundle("t", 0, [e for e in events if e.data.values["rep_id"] == rep]), 0)
        restored = PartitionState.restore(state.snapshot(), cat, CAL)  # survives a snapshot
        w = restored.windows[(DAY, CAL.bounds("day", T0)[0])]
        parts.append(split(w.values, w.samples, restored.team_of)[2])
    org = finish(cat, merge(parts))
    assert org[("competitor_price", "acme", "pro")] == 99.0  # the latest by event time
    assert org[("competitor_price", "acme", "basic")] == 20.0
    assert org[("competitor_price", "globex", "pro")] == 80.0
    assert org[("competitor_price_min", "acme", "pro")] == 99.0
    assert org[("competitor_price_max", "acme")] == 150.0
    assert cat.dimension_caps == {"competitor": 50, "product": 50}


def test_arrival_order_does_not_change_last():
    cat = build_catalog(PRICES, "kpis.yml")
    v = Validator()
    obs = observations()
    results = []
    for order in (obs, obs[::-1]):
        events = [v.decode(record(t, i, competitor=c, product=p, price=x, rep_id="ann"), i, T0 + 60)
                  for i, (t, c, p, x, _) in enumerate(order)]
        state = PartitionState(cat, CAL)
        state.apply(Bundle("t", 0, events), 0)
        w = state.windows[(DAY, CAL.bounds("day", T0)[0])]
        results.append(finish(cat, merge([split(w.values, w.samples, state.team_of)[2]])))
    assert results[0] == results[1]


@pytest.mark.parametrize(("data", "reason"), [
    ({"competitor": "acme", "product": "pro", "price": -1}, "out_of_range"),
    ({"competitor": "acme", "price": 10}, "missing_field"),
    ({"competitor": "acme", "product": "pro", "price": "cheap"}, "invalid_type"),
    ({"competitor": "", "product": "pro", "price": 1}, "out_of_range"),
    ({"competitor": "acme", "product": "pro", "price": 1, "currency": "EUR"}, "currency_mismatch"),
])
def test_bad_events_of_a_declared_type_are_rejected_with_their_reason(data, reason):
    build_catalog(PRICES, "kpis.yml")
    with pytest.raises(RejectedEvent) as exc:
        Validator().decode(record(T0, 1, **data), 0, T0 + 60)
    assert exc.value.reason == reason


@pytest.mark.parametrize(("text", "message"), [
    ("event_types:\n  competitor.price_observed:\n    price: {type: money}\nkpis: []\n",
     "kpis.yml:2: event type 'competitor.price_observed': field 'price': type must be one of"),
    ("event_types:\n  call.completed:\n    x: number\nkpis: []\n",
     "kpis.yml:2: event type 'call.completed' is built in"),
    ("event_types:\n  Prices:\n    x: number\nkpis: []\n", "kpis.yml:2: event type 'Prices': a dotted"),
    ("event_types:\n  a.b:\n    x: {type: string, minimum: 1}\nkpis: []\n", "minimum is a number, for numbers"),
    ("kpis:\n  - name: p\n    help: h\n    aggregation: last\n    types: [call.completed]\n",
     "kpis.yml:2: KPI entry 'p': a last reads one field of event types"),
    ("events: {}\nkpis: []\n", "kpis.yml:1: expected a list of KPI entries"),
])
def test_declaration_errors_name_the_line(text, message):
    with pytest.raises(CatalogError) as exc:
        build_catalog(text, "kpis.yml")
    assert message in str(exc.value)
