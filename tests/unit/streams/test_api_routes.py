"""The API's served routes are the ones docs/openapi.json describes, and only GET answers."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from streams.app import Service
from streams.settings import Settings

DOC = json.loads((Path(__file__).resolve().parents[3] / "docs" / "openapi.json").read_text())


def test_the_served_api_routes_are_the_documented_ones_and_read_only() -> None:
    service = Service(Settings(redis_url="redis://127.0.0.1:1/0"))
    routes = [r for r in service.app.web.web_app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith(("/api/", "/board"))]
    served = {r.resource.canonical for r in routes if r.method == "GET"}
    assert served == set(DOC["paths"])
    for path, operations in DOC["paths"].items():
        assert set(operations) == {"get"}, path
    # the other methods are routed only to be refused (405, tests/integration/test_api.py)
    assert {r.method for r in routes} <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                          "OPTIONS", "SEARCH"}


def test_the_document_is_valid_openapi_schemas() -> None:
    assert DOC["openapi"].startswith("3.1")
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
