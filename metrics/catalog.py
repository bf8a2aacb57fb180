"""The KPI catalog: one declarative entry per KPI (SPEC sections 1 and 6).

An entry says which events a KPI reads (types and field conditions), how it aggregates them
(``count``, ``sum`` of fields, ``distinct`` count of a field's values, ``quantile`` or ``mean``
of a sample series, ``ratio`` of two other KPIs, or an arithmetic ``expression`` over other
KPIs), its dimensions and the windows it is kept for. Nothing else in the service knows a KPI by name: the aggregate stage applies the
compiled rules of whatever catalog it is given, and the exposition renders whatever KPIs the
catalog lists. Adding a KPI is adding an entry here (or in a user catalog file).

Ratios are never stored: they are computed at read time from the sums of their parts, per scope,
so a team ratio is the ratio of the team's sums, never an average of rep ratios.

Samples (``quantile``, ``mean``): an entry with event ``types`` samples the sum of its ``fields``
of each matching event into its ``series`` (its own name when it names none); an entry without
types reads a series something else fills: another entry's, or one the state computes
(:data:`COMPUTED_SERIES`: lead response time, sales cycle length). Each series is kept per rep
as raw observations and merged for teams and the organisation as a mergeable sketch.

Computed values (``computed``): a ``count`` or ``sum`` whose value the state derives per
opportunity rather than reading it from the event: ``sales_cycle`` (won time minus created
time, filed at the won event's windows with the won event's dimensions) and ``open``
(opportunities created and not yet won or lost at the window's end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any, Literal

import msgspec

from metrics.events import DATA_TYPES
from metrics.expressions import ExpressionError, compile_expression
from metrics.rules import PRESENT, accumulator, rule_functions
from metrics.windows import ALL_KIND_INDICES, WINDOW_KINDS

Aggregation = Literal[
    "count", "sum", "distinct", "ratio", "quantile", "mean", "expression", "min", "max", "last"]
#: sample series the state fills itself (not from an event field)
COMPUTED_SERIES = frozenset({"lead_response_seconds", "sales_cycle_seconds"})
#: values the state computes per opportunity (``metrics.opportunities``), by ``computed`` name
COMPUTED_VALUES = frozenset({"sales_cycle", "open", "target"})
Scope = Literal["rep", "team", "org"]
STORED = ("count", "sum", "distinct")  # aggregations kept as sums in window state


class KPI(msgspec.Struct, frozen=True, kw_only=True):
    """One KPI, as data."""

    name: str
    help: str
    aggregation: Aggregation
    types: tuple[str, ...] = ()
    where: dict[str, Any] = {}  # field -> value | list of values | PRESENT
    fields: tuple[str, ...] = ()  # summed fields ("sum"), the sampled ("quantile", "mean") or
    # counted ("distinct": one field) field
    numerator: str | None = None  # aggregation "ratio": KPI names
    denominator: str | None = None
    series: str | None = None  # "quantile" / "mean": a sample series kept by the state
    quantile: float | None = None
    expression: str | None = None  # aggregation "expression": arithmetic over KPI names
    computed: str | None = None  # "count"/"sum" filled by the state (COMPUTED_VALUES)
    dimensions: tuple[str, ...] = ()
    windows: tuple[str, ...] = WINDOW_KINDS
    scopes: tuple[str, ...] = ("rep", "team", "org")
    exported: bool = True  # False for the hidden parts of a ratio
    #: distinct values admitted per dimension and partition (None: SALESPULSE_MAX_DIMENSION_VALUES)
    max_values: int | None = None


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

_CREATED, _WON, _LOST = ("opportunity.created",), ("opportunity.won",), ("opportunity.lost",)
_CLOSED = ("opportunity.won", "opportunity.lost")
_CYCLE = "sales_cycle_seconds"
_DEALS = "deal_size"
#: pipeline KPIs are kept per day and longer: an open pipeline per minute means nothing
_LONG = ("day", "week", "month", "quarter")

OPPORTUNITY_KPIS: tuple[KPI, ...] = (
    KPI(name="opportunities_created", aggregation="count", types=_CREATED,
        help="Opportunities created."),
    KPI(name="opportunities_open", aggregation="count", types=_CREATED, computed="open",
        windows=_LONG,
        help="Opportunities created and not yet won or lost at the window's end (now, for the "
        "current window)."),
    KPI(name="opportunities_won", aggregation="count", types=_WON, help="Opportunities won."),
    KPI(name="opportunities_lost", aggregation="count", types=_LOST, dimensions=("reason",),
        help="Opportunities lost, by reason."),
    KPI(name="opportunities_closed", aggregation="count", types=_CLOSED, exported=False,
        help="Opportunities won or lost (denominator of the win rate)."),
    KPI(name="win_ratio", aggregation="ratio", numerator="opportunities_won",
        denominator="opportunities_closed", help="Win rate: won / (won + lost)."),
    KPI(name="revenue", aggregation="sum", types=_WON, fields=("amount",),
        help="Revenue: the amounts of opportunities won, in the reporting currency."),
    KPI(name="average_deal_size", aggregation="ratio", numerator="revenue",
        denominator="opportunities_won", help="Average deal size: revenue / opportunities won."),
    KPI(name="deal_size_p50", aggregation="quantile", series=_DEALS, types=_WON,
        fields=("amount",), quantile=0.5, windows=_LONG, help="Median amount of deals won."),
    KPI(name="deal_size_p90", aggregation="quantile", series=_DEALS, types=_WON,
        fields=("amount",), quantile=0.9, windows=_LONG,
        help="90th percentile amount of deals won."),
    KPI(name="sales_cycle_seconds_avg", aggregation="mean", series=_CYCLE,
        help="Mean sales cycle (won time minus the opportunity's created time) of deals won."),
    KPI(name="sales_cycle_seconds_p50", aggregation="quantile", series=_CYCLE, quantile=0.5,
        help="Median sales cycle of deals won."),
    KPI(name="sales_cycle_seconds_p90", aggregation="quantile", series=_CYCLE, quantile=0.9,
        help="90th percentile sales cycle of deals won."),
    KPI(name="pipeline_velocity", aggregation="expression", windows=_LONG,
        expression="opportunities_open * win_ratio * average_deal_size"
                   " / (sales_cycle_seconds_avg / 86400)",
        help="Pipeline velocity: open opportunities x win rate x average deal size / average "
        "sales cycle in days (expected revenue per day)."),
    KPI(name="calls_per_opportunity", aggregation="ratio", numerator="calls_made",
        denominator="opportunities_created", help="Calls made / opportunities created."),
    KPI(name="deals_won_expansion", aggregation="count", types=_WON, exported=False,
        where={"deal_type": ["upsell", "cross_sell"]},
        help="Deals won of type upsell or cross-sell."),
    KPI(name="upsell_cross_sell_ratio", aggregation="ratio", numerator="deals_won_expansion",
        denominator="opportunities_won",
        help="Won deals of type upsell or cross-sell / all won deals."),
    KPI(name="revenue_by_region", aggregation="sum", types=_WON, fields=("amount",),
        dimensions=("region",), help="Revenue per region (sales volume by region)."),
    KPI(name="deals_won_by_region", aggregation="count", types=_WON, dimensions=("region",),
        help="Deals won per region."),
    KPI(name="deals_closed_by_region", aggregation="count", types=_CLOSED,
        dimensions=("region",), exported=False, help="Deals won or lost per region."),
    KPI(name="win_ratio_by_region", aggregation="ratio", numerator="deals_won_by_region",
        denominator="deals_closed_by_region", help="Win rate per region."),
    KPI(name="average_deal_size_by_region", aggregation="ratio", numerator="revenue_by_region",
        denominator="deals_won_by_region", help="Average deal size per region."),
    KPI(name="sales_cycle_seconds_by_region", aggregation="sum", types=_WON, computed="sales_cycle",
        dimensions=("region",), exported=False,
        help="Sales cycle seconds of deals won per region (whose creation is known)."),
    KPI(name="deals_cycled_by_region", aggregation="count", types=_WON, computed="sales_cycle",
        dimensions=("region",), exported=False,
        help="Deals won per region whose creation is known (denominator of the mean cycle)."),
    KPI(name="sales_cycle_seconds_avg_by_region", aggregation="ratio",
        numerator="sales_cycle_seconds_by_region", denominator="deals_cycled_by_region",
        help="Mean sales cycle per region."),
    KPI(name="customers_won", aggregation="distinct", types=_WON, fields=("customer_id",),
        help="Distinct customers who bought (deals won naming a customer), exact per window."),
    KPI(name="revenue_with_customer", aggregation="sum", types=_WON, fields=("amount",),
        where={"customer_id": PRESENT}, exported=False,
        help="Revenue of deals won that name their customer."),
    KPI(name="average_basket", aggregation="ratio", numerator="revenue_with_customer",
        denominator="customers_won", help="Average basket: revenue / distinct customers who bought."),
)

_PROMOTER, _DETRACTOR = {"score": [9, 10]}, {"score": [0, 1, 2, 3, 4, 5, 6]}
_NPS, _ENPS = ("nps.responded",), ("enps.responded",)
_GROUPS = ("team", "org")
_NPS_FORMULA = "100 * ({p} - {d}) / {n}"

CUSTOMER_KPIS: tuple[KPI, ...] = (
    KPI(name="spend", aggregation="sum", types=("spend.recorded",), fields=("amount",),
        dimensions=("category",), scopes=_GROUPS, help="Sales and marketing spend, by category."),
    KPI(name="spend_total", aggregation="sum", types=("spend.recorded",), fields=("amount",),
        exported=False, help="Sales plus marketing spend."),
    KPI(name="customer_acquisition_cost", aggregation="ratio", numerator="spend_total",
        denominator="leads_converted", scopes=_GROUPS,
        help="Customer acquisition cost: sales + marketing spend / customers acquired (leads "
        "converted)."),
    KPI(name="nps_responses", aggregation="count", types=_NPS, scopes=_GROUPS,
        help="NPS survey responses."),
    KPI(name="nps_promoters", aggregation="count", types=_NPS, where=_PROMOTER, exported=False,
        help="NPS responses scoring 9-10."),
    KPI(name="nps_detractors", aggregation="count", types=_NPS, where=_DETRACTOR, exported=False,
        help="NPS responses scoring 0-6."),
    KPI(name="nps", aggregation="expression", scopes=_GROUPS,
        expression=_NPS_FORMULA.format(p="nps_promoters", d="nps_detractors", n="nps_responses"),
        help="Net promoter score: % promoters (9-10) - % detractors (0-6)."),
    KPI(name="nps_responses_by_region", aggregation="count", types=_NPS, dimensions=("region",),
        exported=False, help="NPS responses per region."),
    KPI(name="nps_promoters_by_region", aggregation="count", types=_NPS, where=_PROMOTER,
        dimensions=("region",), exported=False, help="NPS promoters per region."),
    KPI(name="nps_detractors_by_region", aggregation="count", types=_NPS, where=_DETRACTOR,
        dimensions=("region",), exported=False, help="NPS detractors per region."),
    KPI(name="nps_by_region", aggregation="expression", scopes=("org",),
        expression=_NPS_FORMULA.format(p="nps_promoters_by_region", d="nps_detractors_by_region",
                                       n="nps_responses_by_region"),
        help="Net promoter score per region."),
    KPI(name="enps_responses", aggregation="count", types=_ENPS, scopes=_GROUPS, exported=False,
        help="eNPS survey responses (anonymous: per team, never per rep)."),
    KPI(name="enps_promoters", aggregation="count", types=_ENPS, where=_PROMOTER, exported=False,
        help="eNPS responses scoring 9-10."),
    KPI(name="enps_detractors", aggregation="count", types=_ENPS, where=_DETRACTOR,
        exported=False, help="eNPS responses scoring 0-6."),
    KPI(name="enps", aggregation="expression", scopes=_GROUPS,
        expression=_NPS_FORMULA.format(p="enps_promoters", d="enps_detractors", n="enps_responses"),
        help="Employee NPS, per team and organisation only (responses are anonymous)."),
)



def with_targets(kpis: tuple[KPI, ...]) -> tuple[KPI, ...]:
    """``kpis`` and, for every exported count or sum without dimensions, its hidden target
    (the sum of the reps' targets, ``metrics.targets``) and its attainment ratio."""
    out = list(kpis)
    for k in kpis:
        if not k.exported or k.aggregation not in ("count", "sum") or k.dimensions:
            continue
        target = f"{k.name}_target"
        out.append(KPI(name=target, aggregation="sum", types=("rep.updated",), computed="target",
                       exported=False, windows=k.windows, scopes=k.scopes,
                       help=f"Targets of {k.name} (rep.updated), summed over the scope's reps."))
        out.append(KPI(name=f"{k.name}_attainment_ratio", aggregation="ratio", numerator=k.name,
                       denominator=target, windows=k.windows, scopes=k.scopes,
                       help=f"Attainment: {k.name} / its target for the window."))
    return tuple(out)


DEFAULT_CATALOG: tuple[KPI, ...] = with_targets(
    ACTIVITY_KPIS + LEAD_KPIS + OPPORTUNITY_KPIS + CUSTOMER_KPIS)


# ---------------------------------------------------------------------------------------------
# Compilation: entries -> per-event-type functions (the source of each rule: metrics.rules).


class Rule(msgspec.Struct, frozen=True):
    """A stored KPI compiled (``metrics.rules``): whether an event counts, the value it adds,
    and ``dims(d, admit=same)``, the key's values after (kpi, rep, team)."""

    kpi: str
    match: Callable[[Any], bool]
    value: Callable[[Any], float]
    dims: Callable[..., tuple]
    kinds: tuple[int, ...]  # indices into WINDOW_KINDS


class CatalogError(ValueError):
    """A catalog entry that cannot be compiled."""


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


class Sampler(msgspec.Struct, frozen=True):
    """A sampled field compiled for one event type: the value of ``value(d)`` of each event
    that ``match``-es goes into sample series ``series``, in windows of ``kinds``."""

    series: str
    match: Callable[[Any], bool]
    value: Callable[[Any], float]
    kinds: tuple[int, ...]


class Extreme(msgspec.Struct, frozen=True):
    """A min, max or last entry compiled for one event type (``metrics.extremes``)."""

    kpi: str
    op: str
    match: Callable[[Any], bool]
    field: str
    dimensions: tuple[str, ...]
    kinds: tuple[int, ...]
    dims: Callable[..., tuple]  # ``dims(d, admit)``: the labels of the dimensions' values


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
        #: event type -> generated ``accumulate(d, rep, team, bucket, admit)`` -> number of hits:
        #: the one form of the stored KPIs' rules that the state applies (``metrics.rules``)
        self.accumulators: dict[str, Callable[..., int]] = {}
        self.kinds_of: dict[str, tuple[int, ...]] = {}
        #: event type -> samplers of its sampled fields (aggregation quantile/mean with types)
        self.samplers: dict[str, tuple[Sampler, ...]] = {}
        #: ``computed`` name -> (entry, rule) of the count/sum entries the state fills
        self.computed: dict[str, tuple[tuple[KPI, Rule], ...]] = {}
        #: event type -> its min, max and last entries
        self.extremes: dict[str, tuple[Extreme, ...]] = {}
        #: expression KPI name -> (names it reads, evaluator)
        self.expressions: dict[str, tuple[tuple[str, ...], Callable[..., float | None]]] = {}
        self._compile()

    def _compile(self) -> None:
        rules: dict[str, list[Rule]] = {}
        entries: dict[str, list[tuple[KPI, Rule]]] = {}
        samplers: dict[str, list[Sampler]] = {}
        sampled_from: dict[str, KPI] = {}  # series -> the entry that samples it from events
        computed: dict[str, list[tuple[KPI, Rule]]] = {}
        extremes: dict[str, list[Extreme]] = {}
        for k in self.kpis:
            unknown = set(k.windows) - set(WINDOW_KINDS)
            if unknown:
                raise CatalogError(f"KPI {k.name!r}: unknown windows {sorted(unknown)}")
            if k.max_values is not None and k.max_values < 1:
                raise CatalogError(f"KPI {k.name!r}: max_values must be at least 1")
            if k.aggregation == "expression":
                self.expressions[k.name] = self._expression(k)
                continue
            if k.aggregation == "ratio":
                for part in (k.numerator, k.denominator):
                    if part not in self.by_name or self.by_name[part].aggregation not in STORED:
                        raise CatalogError(f"KPI {k.name!r}: ratio part {part!r} is not a stored KPI")
                num, den = self.by_name[k.numerator], self.by_name[k.denominator]  # type: ignore[index]
                if den.dimensions and den.dimensions != num.dimensions:
                    raise CatalogError(
                        f"KPI {k.name!r}: the denominator's dimensions must be none or the numerator's"
                    )
                continue
            if k.aggregation in ("min", "max", "last"):
                if not k.types or len(k.fields) != 1:
                    raise CatalogError(f"KPI {k.name!r}: a {k.aggregation} reads one field of event types")
                _check_fields(k)
                match, _, dims = rule_functions(k)
                x = Extreme(k.name, k.aggregation, match, k.fields[0], k.dimensions,
                            tuple(WINDOW_KINDS.index(w) for w in k.windows), dims)
                for t in k.types:
                    extremes.setdefault(t, []).append(x)
                continue
            if k.aggregation in ("quantile", "mean"):
                if k.aggregation == "quantile" and not (k.quantile and 0 < k.quantile < 1):
                    raise CatalogError(f"KPI {k.name!r}: quantile must be between 0 and 1")
                if k.types:
                    self._sampler(k, samplers, sampled_from)
                continue
            if not k.types:
                raise CatalogError(f"KPI {k.name!r}: a {k.aggregation} needs event types")
            _check_fields(k)
            if k.aggregation == "sum" and not (k.fields or k.computed):
                raise CatalogError(f"KPI {k.name!r}: a sum needs fields")
            if k.aggregation == "distinct" and (len(k.fields) != 1 or k.dimensions):
                raise CatalogError(f"KPI {k.name!r}: a distinct count reads one field, no dimensions")
            kinds = tuple(WINDOW_KINDS.index(w) for w in k.windows)
            rule = Rule(k.name, *rule_functions(k), kinds)
            if k.computed is not None:
                if k.computed not in COMPUTED_VALUES or k.aggregation not in ("count", "sum"):
                    raise CatalogError(
                        f"KPI {k.name!r}: computed must be one of {sorted(COMPUTED_VALUES)}, "
                        "on a count or sum"
                    )
                computed.setdefault(k.computed, []).append((k, rule))
                continue
            for t in k.types:
                rules.setdefault(t, []).append(rule)
                entries.setdefault(t, []).append((k, rule))
        for k in self.kpis:
            if k.aggregation in ("quantile", "mean") and not k.types:
                series = k.series or ""
                if series not in COMPUTED_SERIES and series not in sampled_from:
                    raise CatalogError(
                        f"KPI {k.name!r}: sample series {series!r} is neither computed "
                        f"({', '.join(sorted(COMPUTED_SERIES))}) nor sampled by another entry"
                    )
        self.rules_by_type = {t: tuple(r) for t, r in rules.items()}
        self.accumulators = {t: accumulator(k for k, _ in e) for t, e in entries.items()}
        for t in {*samplers, *extremes, *(t for c in ("sales_cycle", "open")
                                          for k, _ in computed.get(c, ()) for t in k.types)}:
            # an event type read only by samples or computed values still reaches the state
            self.accumulators.setdefault(t, accumulator([]))
        self.samplers = {t: tuple(v) for t, v in samplers.items()}
        self.extremes = {t: tuple(v) for t, v in extremes.items()}
        self.computed = {c: tuple(v) for c, v in computed.items()}
        every = ALL_KIND_INDICES
        self.kinds_of: dict[str, tuple[int, ...]] = {
            # the shared ``every`` tuple for KPIs kept in every window: a cheap identity test
            rule.kpi: every if rule.kinds == every else rule.kinds
            for rs in (*rules.values(), *([r for _, r in c] for c in computed.values()))
            for rule in rs
        }

    def _sampler(self, k: KPI, samplers: dict[str, list[Sampler]], sampled_from: dict[str, KPI]) -> None:
        """A sampled field (a quantile or mean with event types): one series per source."""
        series = k.series or k.name
        if series in COMPUTED_SERIES:
            raise CatalogError(f"KPI {k.name!r}: series {series!r} is computed by the state")
        if not k.fields:
            raise CatalogError(f"KPI {k.name!r}: a sampled {k.aggregation} needs fields")
        _check_fields(k)
        first = sampled_from.get(series)
        if first is not None:
            if (first.types, first.where, first.fields) != (k.types, k.where, k.fields):
                raise CatalogError(
                    f"KPI {k.name!r}: series {series!r} is already sampled differently by "
                    f"{first.name!r}"
                )
            return
        sampled_from[series] = k
        kinds = tuple(WINDOW_KINDS.index(w) for w in WINDOW_KINDS)
        match, value, _ = rule_functions(k)
        sampler = Sampler(series, match, value, kinds)
        for t in k.types:
            samplers.setdefault(t, []).append(sampler)

    def _expression(self, k: KPI) -> tuple[tuple[str, ...], Callable[..., float | None]]:
        if not k.expression:
            raise CatalogError(f"KPI {k.name!r}: an expression needs a formula")
        try:
            names, fn = compile_expression(k.expression)
        except ExpressionError as exc:
            raise CatalogError(f"KPI {k.name!r}: {exc}") from None
        dims = None
        for name in names:
            part = self.by_name.get(name)
            if part is None or part.aggregation == "expression" or name == k.name:
                raise CatalogError(f"KPI {k.name!r}: {name!r} is not a KPI the formula can read")
            mine = self.dimensions_of(name)
            if dims is not None and mine != dims:
                raise CatalogError(f"KPI {k.name!r}: the KPIs of a formula must share dimensions")
            dims = mine
        return names, fn

    @property
    def dimension_caps(self) -> dict[str, int]:
        """Bounds the entries set on their dimensions (``max_values``): the lowest per field."""
        caps: dict[str, int] = {}
        for k in self.kpis:
            if k.max_values is not None:
                for dim in k.dimensions:
                    caps[dim] = min(caps.get(dim, k.max_values), k.max_values)
        return caps

    @cached_property  # the catalog does not change once built
    def stored(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation in STORED)

    @cached_property  # the catalog does not change once built
    def distinct(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation == "distinct")

    def series_of(self, k: KPI) -> str:
        """The sample series of a quantile or mean."""
        return k.series or k.name

    @cached_property  # the catalog does not change once built
    def derived(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation == "ratio")

    @cached_property  # the catalog does not change once built
    def sampled(self) -> tuple[KPI, ...]:
        return tuple(k for k in self.kpis if k.aggregation in ("quantile", "mean"))

    def dimensions_of(self, name: str) -> tuple[str, ...]:
        """The dimensions of a KPI's series (a ratio has its numerator's)."""
        k = self.by_name[name]
        if k.aggregation == "ratio":
            k = self.by_name[k.numerator]  # type: ignore[index]
        if k.aggregation == "expression":
            names, _ = self.expressions[k.name]
            return self.dimensions_of(names[0])
        if k.aggregation == "distinct":
            return ()
        return k.dimensions

    def windows_of(self, name: str) -> tuple[str, ...]:
        k = self.by_name[name]
        if k.aggregation == "expression":
            names, _ = self.expressions[k.name]
            return tuple(w for w in k.windows if all(w in self.windows_of(n) for n in names))
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
        where = data.pop("where", None) or {}
        if not isinstance(where, Mapping):
            raise CatalogError(f"catalog entry {data.get('name')!r}: where must be a mapping")
        where = {f: PRESENT if v == "$present" else v for f, v in where.items()}
        try:
            kpi = msgspec.convert(data, KPI)
        except msgspec.ValidationError as exc:
            raise CatalogError(f"catalog entry {data.get('name')!r}: {exc}") from None
        out.append(msgspec.structs.replace(kpi, where=where))
    return tuple(out)
