"""User KPIs from a YAML catalog file: the same entries as the built-in catalog, and errors
that name the file, the entry's line and the entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.catalog import CatalogError
from metrics.events import Bundle, CallCompleted, Event, OpportunityWon
from metrics.rollup import finish, merge, split
from metrics.state import PartitionState
from metrics.user_catalog import build_catalog
from metrics.windows import KIND_INDEX, Calendar

REPO = Path(__file__).resolve().parents[3]
CAL = Calendar("UTC")
T0 = 1_780_000_000.0
GOOD = """\
# user KPIs
kpis:
  - name: calls_to_customers
    help: Outbound calls to existing customers.
    aggregation: count
    types: [call.completed]
    where: {direction: outbound, customer_id: $present}
    windows: [day, week]
  - name: deals_by_type
    help: Deals won per deal type.
    aggregation: count
    types: [opportunity.won]
    dimensions: [deal_type]
    max_values: 3
  - name: upsell_revenue_share
    help: Share of revenue in upsells.
    aggregation: expression
    expression: revenue_upsell / revenue
  - name: revenue_upsell
    help: Revenue of upsells.
    aggregation: sum
    types: [opportunity.won]
    where: {deal_type: upsell}
    fields: [amount]
    exported: false
"""


def test_a_user_catalog_adds_kpis_computed_like_the_built_in_ones():
    cat = build_catalog(GOOD, "kpis.yml")
    assert {"calls_to_customers", "deals_by_type", "calls_made"} <= set(cat.by_name)
    assert cat.windows_of("calls_to_customers") == ("day", "week")
    assert cat.dimension_caps == {"deal_type": 3}
    state = PartitionState(cat, CAL)
    events = [
        Event(0, "s", "a", T0, CallCompleted("r", "outbound", "busy", customer_id="c1")),
        Event(1, "s", "b", T0, CallCompleted("r", "outbound", "busy")),
        Event(2, "s", "c", T0, OpportunityWon("o1", "r", 100.0, deal_type="upsell")),
        Event(3, "s", "d", T0, OpportunityWon("o2", "r", 300.0)),
    ]
    state.apply(Bundle("t", 0, events), 0)
    day = KIND_INDEX["day"]
    start = CAL.bounds("day", T0)[0]
    org = finish(cat, merge([split(state.window_values(day, start))[2]]))
    assert org[("calls_to_customers",)] == 1
    assert org[("deals_by_type", "upsell")] == 1 and org[("deals_by_type", "new")] == 1
    assert org[("upsell_revenue_share",)] == pytest.approx(0.25)


@pytest.mark.parametrize(("text", "message"), [
    ("kpis:\n  - name: ok\n    help: h\n    aggregation: count\n    types: [call.completed]\n"
     "  - name: y\n    help: h\n    aggregation: count\n    types: [call.completed]\n"
     "    where: {directon: outbound}\n",
     "kpis.yml:6: KPI entry 'y': call.completed has no field 'directon'"),
    ("- name: x\n  help: h\n  aggregation: counted\n  types: [call.completed]\n",
     "kpis.yml:1: KPI entry 'x': Invalid enum value 'counted'"),
    ("- name: calls_made\n  help: h\n  aggregation: count\n  types: [call.completed]\n",
     "kpis.yml:1: KPI entry 'calls_made' is defined twice"),
    ("- name: x\n  help: h\n  aggregation: count\n  typo: 1\n",
     "kpis.yml:1: KPI entry 'x': unknown keys ['typo']"),
    ("\n\n- name: x\n  help: h\n  aggregation: ratio\n  numerator: a\n  denominator: calls_made\n",
     "kpis.yml:3: KPI entry 'x': ratio part 'a' is not a stored KPI"),
    ("- name: x\n  help: h\n  aggregation: count\n  types: call.completed\n",
     "kpis.yml:1: KPI entry 'x': Expected `array`, got `str`"),
    ("- name: x\n  help: h\n  aggregation: expression\n  expression: calls_made ** 2\n",
     "kpis.yml:1: KPI entry 'x': 'calls_made ** 2' is not allowed"),
    ("- name: x\n  help: h\n  aggregation: count\n  types: [tool.used]\n  dimensions: [tool]\n"
     "  max_values: 0\n", "KPI entry 'x': max_values must be at least 1"),
    ("kpis: [\n", "kpis.yml: not valid YAML"),
    ("other: 1\n", "kpis.yml:1: expected a list of KPI entries"),
])
def test_errors_name_the_file_the_line_and_the_entry(text, message):
    with pytest.raises(CatalogError) as exc:
        build_catalog(text, "kpis.yml")
    assert message in str(exc.value)


def test_a_bad_catalog_file_stops_the_worker_with_its_message_and_no_traceback(tmp_path):
    bad = tmp_path / "kpis.yml"
    bad.write_text("- name: x\n  help: h\n  aggregation: count\n  types: [call.complete]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SALESPULSE_CATALOG_FILE": str(bad),
           "SALESPULSE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # never reached
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}:1: KPI entry 'x': unknown event type 'call.complete'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
