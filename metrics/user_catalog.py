"""User KPIs from a YAML catalog (``SALESPULSE_CATALOG_FILE``): entries of the same form as the
built-in catalog (``metrics.catalog.KPI``), checked before the worker starts.

The file is a list of entries, or a mapping with the list under ``kpis`` and, optionally, the
event types it declares under ``event_types`` (type name -> field -> spec, see
``metrics.user_events``): those are registered in this process before the entries compile, so
entries can read them, and their events are validated like the built-in ones. Every problem is
reported as ``<file>:<line>: KPI entry <name>: <what is wrong>``, the line being the entry's
first line, whether the entry is malformed (an unknown key, a wrong type) or does not compile
against the event types and the rest of the catalog (an unknown field, a ratio of unknown KPIs,
a name the built-in catalog already has). Parsing only: the caller reads the file.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from metrics.catalog import DEFAULT_CATALOG, KPI, Catalog, CatalogError, load_catalog
from metrics.user_events import build_type, register

_KEYS = frozenset(f.name for f in msgspec.structs.fields(KPI)) - {"computed"}  # state-only


def parse_catalog(text: str, source: str = "<catalog>") -> tuple[tuple[KPI, ...], dict[str, int]]:
    """The user entries of ``text`` and the line of each (by name)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise CatalogError(f"{source}: not valid YAML: {exc}") from None
        if root is None:
            return (), {}
        items = root
        if isinstance(root, yaml.MappingNode):
            sections = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
            unknown = sorted(set(sections) - {"kpis", "event_types"})
            if unknown or "kpis" not in sections:
                raise CatalogError(f"{source}:{root.start_mark.line + 1}: expected a list of KPI "
                                   "entries, or one under the key 'kpis' (and 'event_types')")
            if "event_types" in sections:
                _event_types(loader, sections["event_types"], source)
            items = sections["kpis"]
        if not isinstance(items, yaml.SequenceNode):
            raise CatalogError(f"{source}:{items.start_mark.line + 1}: expected a list of KPI entries")
        kpis: list[KPI] = []
        lines: dict[str, int] = {}
        for node in items.value:
            line = node.start_mark.line + 1
            data = loader.construct_object(node, deep=True)
            kpis.append(_entry(data, f"{source}:{line}"))
            lines.setdefault(kpis[-1].name, line)
        return tuple(kpis), lines
    finally:
        loader.dispose()


def _event_types(loader: yaml.SafeLoader, node: yaml.Node, source: str) -> None:
    if not isinstance(node, yaml.MappingNode):
        raise CatalogError(f"{source}:{node.start_mark.line + 1}: event_types maps type names to fields")
    types = {}
    for key, value in node.value:
        where = f"{source}:{key.start_mark.line + 1}"
        try:
            types[key.value] = build_type(key.value, loader.construct_object(value, deep=True))
        except CatalogError as exc:
            raise CatalogError(f"{where}: {exc}") from None
    register(types)


def _entry(data: Any, where: str) -> KPI:
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: a KPI entry is a mapping (name, help, aggregation, ...)")
    name = data.get("name")
    label = f"KPI entry {name!r}" if isinstance(name, str) else "KPI entry without a name"
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise CatalogError(f"{where}: {label}: unknown keys {unknown} (known: {sorted(_KEYS)})")
    try:
        (kpi,) = load_catalog([data])
    except CatalogError as exc:
        raise CatalogError(f"{where}: {label}: {str(exc).split(': ', 1)[-1]}") from None
    except (TypeError, AttributeError) as exc:
        raise CatalogError(f"{where}: {label}: {exc}") from None
    return kpi


def build_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """The built-in catalog plus the user entries of ``text``, compiled; errors name the entry
    and its line."""
    kpis, lines = parse_catalog(text, source)
    try:
        return Catalog((*DEFAULT_CATALOG, *kpis))
    except CatalogError as exc:
        message = str(exc)
        for name, line in lines.items():
            if message.startswith(f"KPI {name!r}"):
                raise CatalogError(f"{source}:{line}: KPI entry {message[4:]}") from None
        raise CatalogError(f"{source}: {message}") from None
