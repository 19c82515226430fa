"""Pinterest's Conversions API schemas (v5 ``events/create``), shipped inside the package.

The JSON files are mechanical extractions of Pinterest's official OpenAPI description; see
``SOURCE.md`` next to them. Both loaders parse a file once and return the same mapping on every
call, so treat the result as read-only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

#: The request body schema (root: ``ConversionEvents``).
REQUEST_SCHEMA_FILE = "pinterest-capi-v5-events.schema.json"
#: The response schema (root: the 200 body; error bodies under ``$defs``).
RESPONSE_SCHEMA_FILE = "pinterest-capi-v5-events.response.schema.json"


@cache
def _load(name: str) -> Mapping[str, Any]:
    schema: dict[str, Any] = json.loads(files(__name__).joinpath(name).read_text("utf-8"))
    return schema


def load_request_schema() -> Mapping[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``POST /ad_accounts/{id}/events`` body."""
    return _load(REQUEST_SCHEMA_FILE)


def load_response_schema() -> Mapping[str, Any]:
    """The JSON Schema (draft 2020-12) of its responses; ``x-openapi-responses`` maps each
    HTTP status to the ``$defs`` entry its body follows."""
    return _load(RESPONSE_SCHEMA_FILE)
