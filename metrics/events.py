"""The input event contract (SPEC section 2): CloudEvents 1.0 in JSON structured mode.

Decoding and validation are done by msgspec against typed structs: one struct per event type,
constraints declared beside the fields. Nothing here parses JSON by hand. A record that does
not satisfy the contract raises :class:`RejectedEvent` with a short machine-readable reason
(the value of the ``salespulse.errors.reason`` dead-letter header) and a message for a person.

Validated events are re-encoded compactly (msgpack, array-like structs, tagged by type) for the
hop between the ingest and aggregate stages, so the second stage never re-validates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, Struct

Id = Annotated[str, Meta(min_length=1, max_length=128)]
NonNegative = Annotated[float, Meta(ge=0)]
Score = Annotated[int, Meta(ge=0, le=10)]


class _Data(Struct, tag_field="_t", omit_defaults=True, forbid_unknown_fields=False, gc=False):
    """Base of every event's ``data``. Unknown fields are ignored (producers may be newer)."""


class CallCompleted(_Data, tag="call.completed"):
    rep_id: Id
    direction: Literal["outbound", "inbound"]
    outcome: Literal["connected", "no_answer", "voicemail", "busy", "failed"]
    team_id: Id | None = None
    lead_id: Id | None = None
    customer_id: Id | None = None
    talk_seconds: NonNegative = 0.0
    wrap_seconds: NonNegative = 0.0


class EmailSent(_Data, tag="email.sent"):
    rep_id: Id
    team_id: Id | None = None
    lead_id: Id | None = None
    customer_id: Id | None = None
    automated: bool = False


class MeetingScheduled(_Data, tag="meeting.scheduled"):
    rep_id: Id
    team_id: Id | None = None
    lead_id: Id | None = None
    customer_id: Id | None = None
    opportunity_id: Id | None = None


class ConversationHeld(_Data, tag="conversation.held"):
    rep_id: Id
    team_id: Id | None = None
    lead_id: Id | None = None
    customer_id: Id | None = None
    channel: Id | None = None
    duration_seconds: NonNegative = 0.0


class CrmRecordUpdated(_Data, tag="crm.record_updated"):
    rep_id: Id
    object: Literal["lead", "contact", "account", "opportunity", "note", "task"]
    action: Literal["created", "updated"]
    team_id: Id | None = None


class ToolUsed(_Data, tag="tool.used"):
    rep_id: Id
    tool: Id
    team_id: Id | None = None


class LeadCreated(_Data, tag="lead.created"):
    lead_id: Id
    rep_id: Id | None = None
    team_id: Id | None = None
    source: Id | None = None
    region: Id | None = None


class LeadAssigned(_Data, tag="lead.assigned"):
    lead_id: Id
    rep_id: Id
    team_id: Id | None = None


class LeadQualified(_Data, tag="lead.qualified"):
    lead_id: Id
    stage: Literal["mql", "sql"]
    rep_id: Id | None = None
    team_id: Id | None = None


class LeadConverted(_Data, tag="lead.converted"):
    lead_id: Id
    rep_id: Id | None = None
    team_id: Id | None = None
    customer_id: Id | None = None
    opportunity_id: Id | None = None


class LeadLost(_Data, tag="lead.lost"):
    lead_id: Id
    reason: Literal["competitor", "no_decision", "unqualified", "unresponsive", "other"]
    rep_id: Id | None = None
    team_id: Id | None = None


class OpportunityCreated(_Data, tag="opportunity.created"):
    opportunity_id: Id
    rep_id: Id
    team_id: Id | None = None
    lead_id: Id | None = None
    customer_id: Id | None = None
    amount: NonNegative = 0.0
    currency: str | None = None
    region: Id | None = None


class OpportunityStageChanged(_Data, tag="opportunity.stage_changed"):
    opportunity_id: Id
    to_stage: Id
    rep_id: Id | None = None
    team_id: Id | None = None
    from_stage: Id | None = None


class OpportunityWon(_Data, tag="opportunity.won"):
    opportunity_id: Id
    rep_id: Id
    amount: NonNegative
    team_id: Id | None = None
    currency: str | None = None
    customer_id: Id | None = None
    region: Id | None = None
    deal_type: Literal["new", "upsell", "cross_sell", "renewal"] = "new"


class OpportunityLost(_Data, tag="opportunity.lost"):
    opportunity_id: Id
    rep_id: Id
    team_id: Id | None = None
    reason: str | None = None
    region: Id | None = None  # an extension of SPEC section 2: win rate per region needs it


class NpsResponded(_Data, tag="nps.responded"):
    score: Score
    customer_id: Id | None = None
    rep_id: Id | None = None
    team_id: Id | None = None
    region: Id | None = None


class EnpsResponded(_Data, tag="enps.responded"):
    score: Score
    team_id: Id


class SpendRecorded(_Data, tag="spend.recorded"):
    amount: NonNegative
    category: Literal["sales", "marketing"]
    currency: str | None = None
    team_id: Id | None = None


class RepUpdated(_Data, tag="rep.updated"):
    rep_id: Id
    team_id: Id | None = None
    region: Id | None = None
    targets: dict[str, dict[str, float]] | None = None


class UserEvent(_Data, tag="~user"):
    """An event of a type declared in a user catalog (``metrics.user_events``), as carried
    between the stages: its type and validated fields. The aggregate stage unwraps it into the
    type's own struct (:meth:`unwrap`), so the catalog reads its fields like any event's."""

    type: str
    values: dict[str, Any] = {}

    def unwrap(self) -> _Data | None:
        cls = USER_TYPES.get(self.type)
        return None if cls is None else cls(**self.values)


EventData = (
    CallCompleted
    | EmailSent
    | MeetingScheduled
    | ConversationHeld
    | CrmRecordUpdated
    | ToolUsed
    | LeadCreated
    | LeadAssigned
    | LeadQualified
    | LeadConverted
    | LeadLost
    | OpportunityCreated
    | OpportunityStageChanged
    | OpportunityWon
    | OpportunityLost
    | NpsResponded
    | EnpsResponded
    | SpendRecorded
    | RepUpdated
    | UserEvent
)

#: event type -> data struct, straight from the SPEC table (and the types a user catalog
#: declares, added by ``metrics.user_events``).
DATA_TYPES: dict[str, type[_Data]] = {
    cls.__struct_config__.tag: cls for cls in EventData.__args__  # type: ignore[attr-defined]
    if cls is not UserEvent
}
#: user event type -> its struct (``metrics.user_events``)
USER_TYPES: dict[str, type[_Data]] = {}

_DATA_DECODERS = {name: msgspec.json.Decoder(cls) for name, cls in DATA_TYPES.items()}


class Envelope(Struct):
    """CloudEvents 1.0 attributes we rely on. Extension attributes are ignored."""

    specversion: str
    id: Annotated[str, Meta(min_length=1)]  # CloudEvents sets no upper bound on the event id
    source: Annotated[str, Meta(min_length=1)]
    type: Annotated[str, Meta(min_length=1)]
    time: Annotated[dt.datetime, Meta(tz=True)]  # RFC 3339 with an offset, parsed in C
    data: msgspec.Raw = msgspec.Raw(b"")


_ENVELOPE = msgspec.json.Decoder(Envelope)


def _typed_envelopes() -> msgspec.json.Decoder:
    """One decoder for every valid event in a single pass: an envelope struct per event type,
    tagged by the CloudEvent ``type``, with its ``data`` struct inline. It only accepts; a record
    it rejects is classified by the two-step path (:meth:`Validator._decode_checked`)."""
    fields = [(f.name, f.type) for f in msgspec.structs.fields(Envelope) if f.name not in ("type", "data")]
    typed = tuple(
        msgspec.defstruct(f"{cls.__name__}Event", [*fields, ("data", cls)], tag_field="type", tag=name,
                         gc=False)
        for name, cls in DATA_TYPES.items()
    )
    return msgspec.json.Decoder(Union[typed])  # noqa: UP007 - a union built at run time


_TYPED_ENVELOPES = _typed_envelopes()
#: data types with a ``currency`` field (checked against the reporting currency)
_PRICED = frozenset(cls for cls in DATA_TYPES.values() if "currency" in cls.__struct_fields__)


class Event(Struct, array_like=True, gc=False):
    """A validated event, as carried between the ingest and aggregate stages.

    ``offset`` is the event's offset in its source partition, used to recognise records that
    the ingest stage forwards again after a crash or a rebalance.
    """

    offset: int
    source: str
    id: str
    time: float  # event time, seconds since the epoch
    data: EventData

    @property
    def type(self) -> str:
        return self.data.__struct_config__.tag  # type: ignore[return-value]


LANE_KPI = 0  # routed by rep: the KPI catalog
LANE_LEAD = 1  # routed by lead: speed-to-lead state


class Bundle(Struct, array_like=True, gc=False):
    """Events forwarded from one source partition to one aggregate partition, in order.

    ``lane`` says which state the events feed: the same event may travel in both lanes, routed
    once by its rep and once by its lead.
    """

    topic: str
    partition: int
    events: list[Event]
    lane: int = LANE_KPI


BUNDLE_ENCODER = msgspec.msgpack.Encoder()
BUNDLE_DECODER = msgspec.msgpack.Decoder(Bundle)


class RejectedEvent(Exception):
    """A record that breaks the input contract. ``reason`` is short and machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


#: The earliest event time accepted (the Unix epoch): older times are rejected as out_of_range.
EARLIEST_TIME = 0.0


def _reason_for(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Object missing required field"):
        return "missing_field"
    if "Invalid enum value" in text:
        return "invalid_value"
    if any(s in text for s in (">=", "<=", "length", " > ", " < ")):
        return "out_of_range"
    return "invalid_type"


def _check_json_object(raw: bytes) -> None:
    """Name what a record that is not a CloudEvent is instead: not JSON, or not an object."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RejectedEvent("invalid_json", f"value is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RejectedEvent(
            "not_cloudevent", f"value is a JSON {type(obj).__name__}, not a CloudEvent object"
        )


class Validator:
    """Turns raw record values into :class:`Event` or raises :class:`RejectedEvent`.

    One instance per worker; holds the limits from configuration.
    """

    def __init__(
        self, *, max_bytes: int = 65536, max_future_seconds: float = 300.0, currency: str = "USD"
    ) -> None:
        self.max_bytes = max_bytes
        self.max_future_seconds = max_future_seconds
        self.currency = currency

    def decode(self, raw: bytes | None, offset: int, now: float) -> Event:
        """Validate one record value. ``now`` is the worker's clock, for the future-time check.

        Fast path: one typed decode of the whole record. Anything it does not accept (and any
        record that is not plain ASCII or is over the size limit) takes the two-step path,
        which names the reason precisely; both apply the same checks to what they accept.
        """
        if raw is not None and len(raw) <= self.max_bytes and raw.isascii():
            try:
                env = _TYPED_ENVELOPES.decode(raw)
            except msgspec.MsgspecError:
                pass
            else:
                if env.specversion == "1.0":
                    return self._event(offset, env.source, env.id, env.time, env.data, now)
        return self._decode_checked(raw, offset, now)

    def decode_many(
        self, records: Iterable[Any], now: float
    ) -> tuple[list[Event], list[tuple[int, Exception]]]:
        """Validate a batch of records (anything with ``value`` and ``offset``, e.g. Kafka
        records): the accepted events in order, and (index, error) of the others.

        The same decisions as :meth:`decode` of each record, without its per-record calls: the
        fast path and :meth:`_event`'s checks are inlined, and any record they do not plainly
        accept goes through :meth:`decode` itself, which accepts it or names why not. An error
        is a :class:`RejectedEvent`, or whatever else broke (the caller decides).
        """
        events: list[Event] = []
        errors: list[tuple[int, Exception]] = []
        append = events.append
        typed = _TYPED_ENVELOPES.decode
        max_bytes, max_future, currency = self.max_bytes, self.max_future_seconds, self.currency
        priced = _PRICED
        for index, rec in enumerate(records):
            raw = rec.value
            if raw is not None and len(raw) <= max_bytes and raw.isascii():
                try:
                    env = typed(raw)
                    if env.specversion == "1.0":
                        time = env.time.timestamp()
                        data = env.data
                        if time >= EARLIEST_TIME and not time - now > max_future and (
                            type(data) not in priced or data.currency is None
                            or data.currency == currency
                        ):
                            append(Event(rec.offset, env.source, env.id, time, data))
                            continue
                except Exception:  # noqa: BLE001, S110 - decode() below says what it is
                    pass
            try:
                append(self.decode(raw, rec.offset, now))
            except Exception as exc:  # noqa: BLE001 - the caller dead-letters or logs it
                errors.append((index, exc))
        return events, errors

    def _decode_checked(self, raw: bytes | None, offset: int, now: float) -> Event:
        """Validate step by step: size, encoding, envelope, type, data; raise the first fault."""
        if raw is None:
            raise RejectedEvent("invalid_json", "record has no value (tombstone)")
        if len(raw) > self.max_bytes:
            raise RejectedEvent(
                "too_large", f"record is {len(raw)} bytes, the limit is {self.max_bytes}"
            )
        if not raw.isascii():
            # Checked here, once, for the whole record: msgspec does not check the UTF-8 of the
            # fields it ignores.
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RejectedEvent("invalid_encoding", f"value is not UTF-8: {exc}") from None
        try:
            env = _ENVELOPE.decode(raw)
        except msgspec.ValidationError as exc:
            _check_json_object(raw)
            text = str(exc)
            if text.endswith("`$.time`") and ("RFC3339" in text or "timezone" in text):
                raise RejectedEvent("invalid_time", f"time is not RFC 3339 with an offset: {exc}") from None
            raise RejectedEvent("not_cloudevent", f"not a CloudEvent: {exc}") from None
        except msgspec.DecodeError:
            _check_json_object(raw)
            raise  # pragma: no cover - _check_json_object always raises here
        if env.specversion != "1.0":
            raise RejectedEvent(
                "not_cloudevent", f"specversion {env.specversion!r} is not supported (want 1.0)"
            )
        decoder = _DATA_DECODERS.get(env.type)
        if decoder is None:
            raise RejectedEvent("unknown_type", f"event type {env.type!r} is not known")
        if not env.data:
            raise RejectedEvent("missing_field", f"{env.type} event has no `data`")
        try:
            data = decoder.decode(env.data)
        except msgspec.ValidationError as exc:
            raise RejectedEvent(_reason_for(exc), f"{env.type}: {exc}") from None
        if env.type in USER_TYPES:  # user types travel wrapped (the stages' union is fixed)
            event = self._event(offset, env.source, env.id, env.time, data, now)
            event.data = UserEvent(env.type, msgspec.structs.asdict(data))
            return event
        return self._event(offset, env.source, env.id, env.time, data, now)

    def _event(
        self, offset: int, source: str, event_id: str, when: dt.datetime, data: EventData,
        now: float,
    ) -> Event:
        """The checks on a decoded event that depend on configuration: future time, currency."""
        time = when.timestamp()
        if time < EARLIEST_TIME:
            # Years before 1970 (down to year 0 in UTC with an offset of +14:00) break calendar
            # arithmetic downstream; no sales activity is that old.
            raise RejectedEvent(
                "out_of_range",
                f"time {when.isoformat()} is before 1970-01-01T00:00:00Z, the earliest accepted",
            )
        if time - now > self.max_future_seconds:
            raise RejectedEvent(
                "future_time",
                f"time {when.isoformat()} is {time - now:.0f} s ahead of the worker's clock "
                f"(limit {self.max_future_seconds:.0f} s)",
            )
        currency = getattr(data, "currency", None)
        if currency is not None and currency != self.currency:
            raise RejectedEvent(
                "currency_mismatch",
                f"currency {currency!r} differs from the reporting currency {self.currency!r}",
            )
        return Event(offset, source, event_id, time, data)
