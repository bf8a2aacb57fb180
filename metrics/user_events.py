"""Event types a user catalog declares (``event_types`` in ``SALESPULSE_CATALOG_FILE``).

Each type is declared with its fields and their types; it becomes a struct like the built-in
ones (``metrics.events``), so its events are validated the same way (a missing field, a wrong
type or a value out of range goes to the dead-letter topic with its reason) and the catalog
reads their fields like any event's. Between the stages they travel wrapped
(``metrics.events.UserEvent``). Field specs::

    price: {type: number, minimum: 0, required: true}
    competitor: {type: string, required: true}      # an id: 1-128 characters
    channel: {type: string, enum: [web, phone]}
    units: integer
    promo: boolean
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from metrics.catalog import CatalogError
from metrics.events import _DATA_DECODERS, DATA_TYPES, USER_TYPES, _Data

_TYPES: dict[str, Any] = {"string": str, "number": float, "integer": int, "boolean": bool}
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")
_SPEC_KEYS = {"type", "required", "minimum", "maximum", "enum"}
RESERVED = frozenset({"type", "values"})


def _annotation(field: str, spec: Any) -> tuple[Any, bool]:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise CatalogError(f"field {field!r}: a type name or a mapping (type, required, ...)")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise CatalogError(f"field {field!r}: unknown keys {unknown} (known: {sorted(_SPEC_KEYS)})")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise CatalogError(f"field {field!r}: type must be one of {sorted(_TYPES)}, not {kind!r}")
    base = _TYPES[kind]
    meta: dict[str, Any] = {}
    if "enum" in spec:
        if kind != "string" or not spec["enum"] or not isinstance(spec["enum"], list):
            raise CatalogError(f"field {field!r}: enum is a non-empty list of strings")
        base = Literal[tuple(map(str, spec["enum"]))]  # type: ignore[misc]
    elif kind == "string":
        meta = {"min_length": 1, "max_length": 128}
    for key, bound in (("minimum", "ge"), ("maximum", "le")):
        if key in spec:
            if kind not in ("number", "integer") or not isinstance(spec[key], (int, float)):
                raise CatalogError(f"field {field!r}: {key} is a number, for numbers")
            meta[bound] = spec[key]
    annotation = Annotated[base, Meta(**meta)] if meta else base
    return annotation, bool(spec.get("required", False))


def build_type(name: str, fields: Any) -> type[_Data]:
    """The struct of one declared event type (not registered)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise CatalogError(f"event type {name!r}: a dotted lower-case name, e.g. competitor.price_observed")
    if name in DATA_TYPES and name not in USER_TYPES:
        raise CatalogError(f"event type {name!r} is built in")
    if not isinstance(fields, dict) or not fields:
        raise CatalogError(f"event type {name!r}: declare its fields (name: type)")
    required, optional = [], []
    for field, spec in fields.items():
        if not isinstance(field, str) or not _FIELD.match(field) or field in RESERVED:
            raise CatalogError(f"event type {name!r}: {field!r} is not a usable field name")
        try:
            annotation, is_required = _annotation(field, spec)
        except CatalogError as exc:
            raise CatalogError(f"event type {name!r}: {exc}") from None
        if is_required:
            required.append((field, annotation))
        else:
            optional.append((field, annotation | None, None))
    cls_name = "User_" + re.sub(r"\W", "_", name)
    return msgspec.defstruct(cls_name, [*required, *optional], bases=(_Data,), tag=name)


def register(types: dict[str, type[_Data]]) -> None:
    """Make declared types known to validation, the catalog and the state (this process)."""
    from metrics.state import TYPE_OF

    for name, cls in types.items():
        old = USER_TYPES.get(name)
        if old is not None:
            TYPE_OF.pop(old, None)
        USER_TYPES[name] = cls
        DATA_TYPES[name] = cls
        _DATA_DECODERS[name] = msgspec.json.Decoder(cls)
        TYPE_OF[cls] = name
