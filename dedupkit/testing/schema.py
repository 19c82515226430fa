"""Validation against Pinterest's official schemas (:mod:`dedupkit.spec`) with ``jsonschema``.

Error texts name the failing location and rule but never echo the offending value: a body can
hold client IPs and user agents, and these messages end up in responses and dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

try:
    # jsonschema ships no type information; the ignore is unused when types-jsonschema is there.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
    from referencing import Registry, Resource
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "dedupkit.testing needs the jsonschema package: pip install 'flask-dedupkit[testing]'"
    ) from exc

from ..spec import load_request_schema, load_response_schema

# Rules whose jsonschema message names keys (required, unexpected) but never a value.
_SAFE_MESSAGES = frozenset({"required", "additionalProperties", "dependentRequired"})


@cache
def _request_validator() -> Any:
    return Draft202012Validator(load_request_schema())


@cache
def _response_validator(ref: str) -> Any:
    schema = load_response_schema()
    registry: Registry[Any] = Registry().with_resource(
        schema["$id"], Resource.from_contents(dict(schema))
    )
    return Draft202012Validator({"$ref": schema["$id"] + ref}, registry=registry)


def request_errors(body: object) -> list[str]:
    """Why ``body`` is not a valid ``events/create`` request body; empty when it is."""
    return _describe_all(_request_validator(), body)


def response_errors(body: object, status: int = 200) -> list[str]:
    """Why ``body`` is not what the spec allows Pinterest to answer with ``status``.

    The 200 body is a ``ConversionApiResponse``, a 422 a ``DetailedError``, any other status
    an ``Error``, as the spec's ``x-openapi-responses`` says.
    """
    responses: Mapping[str, Any] = load_response_schema()["x-openapi-responses"]
    entry = responses.get(str(status), responses["default"])
    return _describe_all(_response_validator(str(entry["$ref"])), body)


def _describe_all(validator: Any, instance: object) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_describe(error) for error in errors]


def _describe(error: Any) -> str:
    where = str(error.json_path)
    rule = str(error.validator)
    value = error.validator_value
    if rule in _SAFE_MESSAGES:
        text = str(error.message)
    elif rule == "type":
        types = value if isinstance(value, list) else [value]
        text = "must be of type " + " or ".join(str(t) for t in types)
    elif rule in {"anyOf", "oneOf"}:
        branches = [
            "+".join(branch.get("required", ())) or "the schema"
            for branch in value
            if isinstance(branch, Mapping)
        ]
        text = "must have one of: " + " | ".join(branches)
        # A branch whose required keys are there failed on their values: say how, e.g. for
        # an ``em`` that is not an array. (Missing keys are what the text above already says.)
        near = [e for e in error.context if e.validator != "required"]
        if near:
            text += f" ({_describe(max(near, key=lambda e: len(e.absolute_path)))})"
    elif rule == "enum":
        text = "must be one of " + ", ".join(repr(v) for v in value)
    else:
        text = f"fails {rule} {value!r}"
    return f"{where}: {text}"
