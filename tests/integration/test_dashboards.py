"""Every shipped board query and alert expression returns data from a real Prometheus.

A worker is fed by the demo generator (a short backfill, then a live trickle, one hostile record
and one producer duplicate), and a real Prometheus (Debian's package, via
`deploy/observability.sh`) scrapes it every second with the shipped alert rules loaded. Then:

* every query of every panel of every dashboard in `deploy/grafana/dashboards/` is run for every
  value of the board's `window` variable, with `team` set to "All": none may return an empty
  result (an empty panel shows "No data" to the floor), and every metric it names must exist;
* each `label_values(...)` variable query must find values;
* every alert expression of `deploy/prometheus/rules/` must evaluate, name only existing
  metrics, and each side of its top-level comparisons and set operations (what the alert
  compares) must return data, so that a renamed metric or label can never leave an alert
  silently unable to fire.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.demo import mix
from tests.integration.harness import REPO, Worker, create_topics, produce, topic_set, unique, value
from tests.integration.observability import Observability, safe, wait_until

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
METRIC = re.compile(r"\b(salespulse_[a-z0-9_]+|up)\b(?!\s*\()")
# Top-level binary operators whose sides the alert compares or combines.
SPLIT = re.compile(r"\s(>=|<=|==|!=|>|<|or|and|unless)\s")
MODIFIER = re.compile(r"^(?:bool\s*|(?:on|ignoring|group_left|group_right)\s*\([^)]*\)\s*)*")
NUMBER = re.compile(r"^[0-9.eE+-]+$")


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panels(panel))
    return out


def board_queries(path: Path) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    board = json.loads(path.read_text())
    queries = [(p.get("title", "?"), t["expr"]) for p in panels(board)
               for t in p.get("targets", []) if t.get("expr")]
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    return queries, variables


def top_level_sides(expr: str) -> list[str]:
    """The operands of ``expr``'s top-level comparison and set operators (recursing into
    operands that are wholly parenthesised); numbers are dropped, ``absent(x)`` becomes ``x``."""
    expr = expr.strip()
    depth, cuts, i = 0, [], 0
    masked = list(expr)
    for i, ch in enumerate(expr):  # blank out everything inside brackets of any kind
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth:
            masked[i] = "_"
    flat = "".join(masked)
    for m in SPLIT.finditer(flat):
        cuts.append((m.start(), m.end()))
    if not cuts:
        inner = expr
        if inner.startswith("(") and inner.endswith(")") and _balanced(inner[1:-1]):
            return top_level_sides(inner[1:-1])
        if inner.startswith("absent(") and inner.endswith(")"):
            return [inner[len("absent("):-1]]
        return [] if NUMBER.match(inner) else [inner]
    sides, start = [], 0
    for a, b in cuts:
        sides.append(expr[start:a])
        start = b
    sides.append(expr[start:])
    out = []
    for side in sides:
        side = MODIFIER.sub("", side.strip())
        out.extend(top_level_sides(side))
    return out


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def test_top_level_sides() -> None:
    assert top_level_sides("sum by (team) (x) > 0") == ["sum by (team) (x)"]
    assert top_level_sides("max(a{w=\"h\"})\n  > on() group_left()\n4 * max(b)") == [
        'max(a{w="h"})', "4 * max(b)"]
    assert top_level_sides("absent(up{job=\"s\"})") == ['up{job="s"}']
    assert top_level_sides("s(r[5m]) > 1 or (s(r[5m]) > 0.05 and s(r[5m]) / (s(r[5m]) + (s(p) or vector(0))) > 0.01)") == [
        "s(r[5m])", "s(r[5m])", "s(r[5m]) / (s(r[5m]) + (s(p) or vector(0)))"]


def _demo_records(topics: dict[str, str], n: int, reps: int, teams: int, seed: int, live: bool,
                  step_seconds: float = mix.DEFAULT_STEP_SECONDS):
    rename = {mix.ACTIVITIES: topics["activities"], mix.LEADS: topics["leads"],
              mix.DEALS: topics["deals"], mix.FEEDBACK: topics["feedback"], mix.REPS: topics["reps"]}
    floor = mix.SalesFloor(reps=reps, teams=teams, seed=seed, step_seconds=step_seconds)
    for rec in islice(floor.events(n, rate=50.0 if live else None), n):
        yield rename[rec.topic], rec.key, rec.value, []


def test_every_board_query_and_alert_expression_returns_data(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("dash"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    # the backfill spans half an hour of event time, so that deals get won and lost (the demo's
    # opportunities close within minutes): the pipeline panels need some
    backfill = list(_demo_records(topics, 6000, reps=60, teams=6, seed=5, live=False, step_seconds=0.3))
    duplicate = backfill[-1]
    hostile = (topics["activities"], b"x", b'{"specversion": "1.0", "type": "call.completed"', [])
    worker = Worker(bootstrap, unique("app"), topics, log_dir,
                    SALESPULSE_GRACE_SECONDS="5", SALESPULSE_LEAD_SLA_SECONDS="2")
    stop = threading.Event()
    obs: Observability | None = None
    try:
        worker.start()
        asyncio.run(produce(bootstrap, [*backfill, duplicate, hostile]))

        def trickle() -> None:  # live events: current minute windows, rates, lead responses
            live = _demo_records(topics, 10**6, reps=60, teams=6, seed=6, live=True)
            while not stop.is_set():
                asyncio.run(produce(bootstrap, list(islice(live, 25))))
                stop.wait(0.5)

        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        worker.wait_for(lambda s: (value(s, "salespulse_events_rejected_total", reason="invalid_json")
                                   or 0) >= 1, timeout=60, what="backfill processed")
        obs = Observability(log_dir / "local", f"127.0.0.1:{worker.port}", "http://127.0.0.1:9/none")
        obs.run("up")
        wait_until(lambda: obs.query("salespulse_org_calls_made"), 60,
                   "Prometheus holding the worker's series", lambda: obs.api("/api/v1/targets"))
        time.sleep(35)  # rate(...[30s]) needs two scrapes and a 30 s range to look back on

        names = set(obs.api("/api/v1/label/__name__/values"))
        problems: list[str] = []
        empty: dict[str, str] = {}  # where -> query, looked at again below

        def check(where: str, expr: str) -> None:
            missing = sorted({m for m in METRIC.findall(expr) if m not in names})
            if missing:
                problems.append(f"{where}: names metrics that do not exist: {missing}\n  {expr}")
                return
            try:
                result = obs.query(expr)
            except (urllib.error.HTTPError, AssertionError) as exc:
                problems.append(f"{where}: Prometheus rejected it ({exc})\n  {expr}")
                return
            if not result:
                empty[where] = expr

        checked = 0
        for path in DASHBOARDS:
            queries, variables = board_queries(path)
            assert queries, f"{path.name}: no panel queries found"
            windows = variables["window"]["query"].split(",") if "window" in variables else [""]
            for name, var in variables.items():
                query = var.get("query")
                query = query.get("query") if isinstance(query, dict) else query
                found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query or "")
                if found:
                    metric, label = found.groups()
                    if not obs.api(f"/api/v1/label/{label}/values?match[]={metric}"):
                        problems.append(f"{path.name} variable {name}: no values for {query}")
            for title, expr in queries:
                for window in windows:
                    text = expr.replace("$window", window).replace("$team", ".*")
                    for var, sub in GRAFANA_VARS.items():
                        text = text.replace(var, sub)
                    assert "$" not in text, f"{path.name} '{title}': unknown variable in {text}"
                    check(f"{path.name} panel '{title}' (window={window})", text)
                    checked += 1
                    if "$window" not in expr:
                        break

        alerts = 0
        for path in RULE_FILES:
            for group in yaml.safe_load(path.read_text())["groups"]:
                for rule in group["rules"]:
                    if "alert" not in rule:
                        continue
                    alerts += 1
                    expr = rule["expr"]
                    where = f"{path.name} alert {rule['alert']}"
                    missing = sorted({m for m in METRIC.findall(expr) if m not in names})
                    if missing:
                        problems.append(f"{where}: names metrics that do not exist: {missing}")
                        continue
                    obs.query(expr)  # evaluates (raises on a Prometheus error)
                    sides = top_level_sides(expr)
                    assert sides, f"{where}: nothing to compare in {expr}"
                    for side in sides:
                        check(f"{where}, side", side)

        # An empty answer is asked again for up to a minute: the minute window is empty for a
        # moment after each minute turns, and a lead response in the current minute takes the
        # live trickle a while. What stays empty all that time is a board showing "No data".
        deadline = time.monotonic() + 65
        while empty and time.monotonic() < deadline:
            time.sleep(2)
            empty = {where: expr for where, expr in empty.items() if not obs.query(expr)}
        problems += [f"{where}: empty result for a minute\n  {expr}" for where, expr in empty.items()]
        print(f"{checked} board queries and {alerts} alert expressions checked "
              f"against {len(names)} metric names")
        assert checked > 30 and alerts >= 5
        assert not problems, "\n".join(problems) + f"\nworker log:\n{safe(lambda: worker.log_tail(20))}"
    finally:
        stop.set()
        try:
            if obs is not None:
                obs.run("down")
        finally:
            worker.stop()
