"""The KPI catalog: one declarative entry per KPI (SPEC sections 1 and 6).

An entry says which events a KPI reads (types and field conditions), how it aggregates them
(``count``, ``sum`` of fields, or ``ratio`` of two other KPIs), its dimensions and the windows it
is kept for. Nothing else in the service knows a KPI by name: the aggregate stage applies the
compiled rules of whatever catalog it is given, and the exposition renders whatever KPIs the
catalog lists. Adding a KPI is adding an entry here (or in a user catalog file).

Ratios are never stored: they are computed at read time from the sums of their parts, per scope,
so a team ratio is the ratio of the team's sums, never an average of rep ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import msgspec

from metrics.events import DATA_TYPES
from metrics.labels import same
from metrics.windows import ALL_KIND_INDICES, WINDOW_KINDS

Aggregation = Literal["count", "sum", "ratio", "quantile", "mean"]
Scope = Literal["rep", "team", "org"]


class Present(msgspec.Struct, frozen=True):
    """Condition: the field is set (not null)."""


PRESENT = Present()


class KPI(msgspec.Struct, frozen=True, kw_only=True):
    """One KPI, as data."""

    name: str
    help: str
    aggregation: Aggregation
    types: tuple[str, ...] = ()
    where: dict[str, Any] = {}  # field -> value | list of values | PRESENT
    fields: tuple[str, ...] = ()  # summed fields (aggregation "sum")
    numerator: str | None = None  # aggregation "ratio": KPI names
    denominator: str | None = None
    series: str | None = None  # "quantile" / "mean": a sample series kept by the state
    quantile: float | None = None
    dimensions: tuple[str, ...] = ()
    windows: tuple[str, ...] = WINDOW_KINDS
    scopes: tuple[str, ...] = ("rep", "team", "org")
    exported: bool = True  # False for the hidden parts of a ratio


_ACTIVITY = ("call.completed", "email.sent", "meeting.scheduled", "conversation.held")
_OUTBOUND = {"direction": "outbound"}

ACTIVITY_KPIS: tuple[KPI, ...] = (
    KPI(name="calls_made", aggregation="count", types=("call.completed",), where=_OUTBOUND,
        help="Outbound calls attempted, any outcome."),
    KPI(name="calls_connected", aggregation="count", types=("call.completed",),
        where={**_OUTBOUND, "outcome": "connected"},
        help="Outbound calls that connected (voicemail is not a connection)."),
    KPI(name="call_connect_ratio", aggregation="ratio", numerator="calls_connected",
        denominator="calls_made", help="Connected outbound calls / outbound calls made."),
    KPI(name="calls_received", aggregation="count", types=("call.completed",),
        where={"direction": "inbound"}, help="Inbound calls."),
    KPI(name="calls_received_connected", aggregation="count", types=("call.completed",),
        where={"direction": "inbound", "outcome": "connected"},
        help="Inbound calls that connected."),
    KPI(name="talk_seconds", aggregation="sum", types=("call.completed",),
        fields=("talk_seconds",), help="Talk time summed over all calls, in seconds."),
    KPI(name="handled_calls", aggregation="count", types=("call.completed",),
        where={"outcome": "connected"}, exported=False,
        help="Connected calls in both directions (denominator of average handle time)."),
    KPI(name="handle_seconds", aggregation="sum", types=("call.completed",),
        where={"outcome": "connected"}, fields=("talk_seconds", "wrap_seconds"), exported=False,
        help="Talk plus wrap-up seconds of connected calls (numerator of average handle time)."),
    KPI(name="average_handle_seconds", aggregation="ratio", numerator="handle_seconds",
        denominator="handled_calls",
        help="Average handle time: (talk + wrap-up) seconds of connected calls / connected calls."),
    KPI(name="emails_sent", aggregation="count", types=("email.sent",),
        where={"automated": False}, help="Emails sent by a person."),
    KPI(name="emails_automated", aggregation="count", types=("email.sent",),
        where={"automated": True}, help="Sequence or bulk emails (automated), counted apart."),
    KPI(name="conversations", aggregation="count", types=("conversation.held",),
        help="Real two-way conversations, any channel."),
    KPI(name="conversation_seconds", aggregation="sum", types=("conversation.held",),
        fields=("duration_seconds",), help="Duration of conversations held, in seconds."),
    KPI(name="meetings_scheduled", aggregation="count", types=("meeting.scheduled",),
        help="Meetings scheduled."),
    KPI(name="crm_updates", aggregation="count", types=("crm.record_updated",),
        help="CRM records created or updated by the rep."),
    KPI(name="tool_uses", aggregation="count", types=("tool.used",), dimensions=("tool",),
        help="Sales tool uses, per tool."),
    KPI(name="customer_engagements", aggregation="count", types=_ACTIVITY,
        where={"customer_id": PRESENT},
        help="Activities (calls, emails, meetings, conversations) with an existing customer."),
)

_RESPONSE = "lead_response_seconds"

LEAD_KPIS: tuple[KPI, ...] = (
    KPI(name="new_leads", aggregation="count", types=("lead.created",),
        dimensions=("source", "region"), help="New leads, by source and region."),
    KPI(name="leads_created", aggregation="count", types=("lead.created",), exported=False,
        help="New leads, all sources (denominator of the acquisition rate)."),
    KPI(name="leads_qualified_sql", aggregation="count", types=("lead.qualified",),
        where={"stage": "sql"}, help="Leads qualified as sales-qualified (SQL)."),
    KPI(name="leads_converted", aggregation="count", types=("lead.converted",),
        help="Leads converted to customers."),
    KPI(name="leads_lost", aggregation="count", types=("lead.lost",), dimensions=("reason",),
        help="Leads lost, by reason."),
    KPI(name="leads_closed", aggregation="count", types=("lead.lost", "lead.converted"),
        exported=False, help="Leads lost or converted (denominator of the lost-lead ratio)."),
    KPI(name="lost_lead_ratio", aggregation="ratio", numerator="leads_lost",
        denominator="leads_closed", help="Leads lost / leads closed (lost or converted), by reason."),
    KPI(name="sql_to_customer_ratio", aggregation="ratio", numerator="leads_converted",
        denominator="leads_qualified_sql", help="Leads converted / leads qualified as SQL."),
    KPI(name="customer_acquisition_ratio", aggregation="ratio", numerator="leads_converted",
        denominator="leads_created", help="Leads converted / new leads."),
    KPI(name="lead_response_seconds_p50", aggregation="quantile", series=_RESPONSE, quantile=0.5,
        help="Median time from lead creation to its first human touch, leads touched in the window."),
    KPI(name="lead_response_seconds_p90", aggregation="quantile", series=_RESPONSE, quantile=0.9,
        help="90th percentile time to first human touch, leads touched in the window."),
    KPI(name="lead_response_seconds_avg", aggregation="mean", series=_RESPONSE,
        help="Mean time to first human touch, leads touched in the window."),
)

DEFAULT_CATALOG: tuple[KPI, ...] = ACTIVITY_KPIS + LEAD_KPIS


# ---------------------------------------------------------------------------------------------
# Compilation: entries -> per-event-type rules for the hot path.


class Rule(msgspec.Struct, frozen=True):
    """A stored KPI compiled for one event type."""

    kpi: str
    match: Callable[[Any], bool]
    value: Callable[[Any], float]
    dims: Callable[[Any], tuple]
    kinds: tuple[int, ...]  # indices into WINDOW_KINDS


class CatalogError(ValueError):
    """A catalog entry that cannot be compiled."""


def _condition(field: str, expected: Any) -> Callable[[Any], bool]:
    if isinstance(expected, Present):
        return lambda d: getattr(d, field, None) is not None
    if isinstance(expected, (list, tuple, set, frozenset)):
        allowed = frozenset(expected)
        return lambda d: getattr(d, field, None) in allowed
    return lambda d: getattr(d, field, None) == expected


def _match(where: Mapping[str, Any]) -> Callable[[Any], bool]:
    checks = [_condition(f, v) for f, v in where.items()]
    if not checks:
        return lambda d: True
    if len(checks) == 1:
        return checks[0]
    return lambda d: all(c(d) for c in checks)


def _value(kpi: KPI) -> Callable[[Any], float]:
    if kpi.aggregation == "count":
        return lambda d: 1.0
    fields = kpi.fields
    if len(fields) == 1:
        (f,) = fields
        return lambda d: getattr(d, f, 0.0) or 0.0
    return lambda d: sum(getattr(d, f, 0.0) or 0.0 for f in fields)


def _dims(kpi: KPI) -> Callable[[Any], tuple]:
    dims = kpi.dimensions
    if not dims:
        return lambda d: ()
    return lambda d: tuple(str(getattr(d, f, None) or "unknown") for f in dims)


def _accumulator(rules: list[tuple[KPI, Rule]]) -> Callable[..., int]:
    """One function per event type that adds all its KPI hits to a bucket dict.

    ``accumulate(d, rep, team, bucket, admit)``: ``admit(label, value)`` maps each dimension
    value to its label value (itself, or ``other`` beyond the label's cap: ``metrics.labels``).

    The hot path of the aggregate stage: instead of three closure calls per KPI per event, one
    generated function with the catalog's conditions inlined as attribute comparisons. Field
    names are checked against the event structs before this runs (``_check_fields``); every
    literal is passed in the namespace, never pasted into the source.
    """
    ns: dict[str, Any] = {"_same": same}
    body = ["def accumulate(d, rep, team, bucket, admit=_same):", "    n = 0"]
    dim_fields = sorted({f for kpi, _ in rules for f in kpi.dimensions})
    for f in dim_fields:
        # each dimension value is admitted (see metrics.labels) once per event, when a KPI
        # that reads it matches: the same decisions whichever path applies the event
        ns[f"_l_{f}"] = f
        body.append(f"    _d_{f} = None")
    for i, (kpi, _) in enumerate(rules):
        conds = []
        for j, (f, expected) in enumerate(kpi.where.items()):
            const = f"_c{i}_{j}"
            if isinstance(expected, Present):
                conds.append(f"d.{f} is not None")
                continue
            if isinstance(expected, (list, tuple, set, frozenset)):
                ns[const] = frozenset(expected)
                conds.append(f"d.{f} in {const}")
            else:
                ns[const] = expected
                conds.append(f"d.{f} == {const}")
        ns[f"_k{i}"] = kpi.name
        if kpi.aggregation == "count":
            value = "1.0"
        else:
            value = " + ".join(f"(d.{f} or 0.0)" for f in kpi.fields)
        dims = "".join(f", _d_{f}" for f in kpi.dimensions)
        indent = "    "
        if conds:
            body.append(f"    if {' and '.join(conds)}:")
            indent = "        "
        for f in kpi.dimensions:
            body.append(f"{indent}if _d_{f} is None:")
            body.append(f"{indent}    _d_{f} = admit(_l_{f}, str(d.{f} or 'unknown'))")
        body.append(f"{indent}k = (_k{i}, rep, team{dims})")
        body.append(f"{indent}bucket[k] = bucket.get(k, 0.0) + {value}")
        body.append(f"{indent}n += 1")
    body.append("    return n")
    exec(compile("\n".join(body), "<catalog>", "exec"), ns)  # noqa: S102 - generated from checked data
    return ns["accumulate"]


def _check_fields(k: KPI) -> None:
    """Every type exists and carries every field the entry reads: a typo must not silently
    leave a user's KPI at zero."""
    for t in k.types:
        cls = DATA_TYPES.get(t)
        if cls is None:
            raise CatalogError(f"KPI {k.name!r}: unknown event type {t!r}")
        known = set(cls.__struct_fields__)
        for f in (*k.where, *k.fields, *k.dimensions):
            if f not in known:
                raise CatalogError(f"KPI {k.name!r}: {t} has no field {f!r}")


class Catalog:
    """A validated, compiled catalog."""

    def __init__(self, kpis: Iterable[KPI] = DEFAULT_CATALOG) -> None:
        self.kpis: tuple[KPI, ...] = tuple(kpis)
        self.by_name: dict[str, KPI] = {}
        for k in self.kpis:
            if k.name in self.by_name:
                raise CatalogError(f"KPI {k.name!r} is defined twice")
            self.by_name[k.name] = k
        self.rules_by_type: dict[str, tuple[Rule, ...]] = {}
        #: event type -> generated ``accumulate(d, rep, team, bucket, admit)`` -> number of hits
        self.accumulators: dict[str, Callable[..., int]] = {}
        self.kinds_of: dict[str, tuple[int, ...]] = {}
        self._compile()

    def _compile(self) -> None:
        rules: dict[str, list[Rule]] = {}
        entries: dict[str, list[tuple[KPI, Rule]]] = {}
        for k in self.kpis:
            unknown = set(k.windows) - set(WINDOW_KINDS)
            if unknown:
                raise CatalogError(f"KPI {k.name!r}: unknown windows {sorted(unknown)}")
            if k.aggregation == "ratio":
                for part in (k.numerator, k.denominator):
                    if part not in self.by_name or self.by_name[part].aggregation not in ("count", "sum"):
                        raise CatalogError(f"KPI {k.name!r}: ratio part {part!r} is not a stored KPI")
                num, den = self.by_name[k.numerator], self.by_name[k.denominator]  # type: ignore[index]
                if den.dimensions and den.dimensions != num.dimensions:
                    raise CatalogError(
                        f"KPI {k.name!r}: the denominator's dimensions must be none or the numerator's"
                    )
                continue
            if k.aggregation in ("quantile", "mean"):
                if not k.series:
                    raise CatalogError(f"KPI {k.name!r}: a {k.aggregation} needs a sample series")
                if k.aggregation == "quantile" and not (k.quantile and 0 < k.quantile < 1):
                    raise CatalogError(f"KPI {k.name!r}: quantile must be between 0 and 1")
                continue
            if not k.types:
                raise CatalogError(f"KPI {k.name!r}: a {k.aggregation} needs event types")
            _check_fields(k)
            if k.aggregation == "sum" and not k.fields:
                raise CatalogError(f"KPI {k.name!r}: a sum needs fields")
            kinds = tuple(WINDOW_KINDS.index(w) for w in k.windows)
            rule = Rule(k.name, _match(k.where), _value(k), _dims(k), kinds)
            for t in k.types:
                rules.setdefault(t, []).append(rule)
                entries.setdefault(t, []).append((k, rule))
        self.rules_by_type = {t: tuple(r) for t, r in rules.items()}
        self.accumulators = {t: _accumulator(e) for t, e in entries.items()}
        every = ALL_KIND_INDICES
        self.kinds_of: dict[str, tuple[int, ...]] = {
            # the shared ``every`` tuple for KPIs kept in every window: a cheap identity test
            rule.kpi: every if rule.kinds == every else rule.kinds
            for rs in rules.values() for rule in rs
        }

    @property
    def stored(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation in ("count", "sum"))

    @property
    def derived(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation == "ratio")

    @property
    def sampled(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation in ("quantile", "mean"))

    def dimensions_of(self, name: str) -> tuple[str, ...]:
        """The dimensions of a KPI's series (a ratio has its numerator's)."""
        k = self.by_name[name]
        if k.aggregation == "ratio":
            k = self.by_name[k.numerator]  # type: ignore[index]
        return k.dimensions

    def windows_of(self, name: str) -> tuple[str, ...]:
        k = self.by_name[name]
        if k.aggregation == "ratio":
            num = self.by_name[k.numerator]  # type: ignore[index]
            den = self.by_name[k.denominator]  # type: ignore[index]
            return tuple(w for w in k.windows if w in num.windows and w in den.windows)
        return k.windows


def load_catalog(entries: Iterable[Mapping[str, Any]]) -> tuple[KPI, ...]:
    """Build KPI entries from plain data (a parsed YAML or JSON user catalog).

    A condition value of ``"$present"`` means "the field is set".
    """
    out = []
    for entry in entries:
        data = dict(entry)
        where = {f: PRESENT if v == "$present" else v for f, v in (data.pop("where", None) or {}).items()}
        try:
            kpi = msgspec.convert(data, KPI)
        except msgspec.ValidationError as exc:
            raise CatalogError(f"catalog entry {data.get('name')!r}: {exc}") from None
        out.append(msgspec.structs.replace(kpi, where=where))
    return tuple(out)
