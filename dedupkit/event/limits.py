"""Pinterest's limits on one CAPI event, checked when the event is queued.

Nothing Pinterest's schema would refuse may enter a batch: one such event makes Pinterest refuse
the whole request. The checks are derived from the shipped request schema
(:mod:`dedupkit.spec`) when this module is imported, so a schema update updates them; on top of
the schema come a few limits of dedupkit's own (:data:`OWN_LIMITS`), for fields the schema leaves
unbounded. :func:`check_capi_event` runs on every tracked event, so the schema is compiled into
plain closures once and the check itself costs microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InvalidEvent
from ..spec import load_request_schema
from .page_url import MAX_URL_LENGTH

#: ``format: int64`` in the schema.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Longest string where the schema sets no ``maxLength`` (a user agent fits many times over).
MAX_STRING_LENGTH = 4096
#: Most items in an array where the schema sets no ``maxItems`` (line items of one order).
MAX_ARRAY_ITEMS = 1000
#: Most characters of strings in one event: a batch of 1,000 events stays a few MB at most.
MAX_EVENT_CHARS = 64 * 1024
#: Deepest nesting of an event's data or a beacon: the beacon, its data, line items, one line
#: item (objects in a list in an object) need 4; the rest is headroom.
MAX_DEPTH = 8
#: ``ConversionEvents.data`` holds at most this many events.
MAX_BATCH_SIZE = 1000

_DECIMAL = r"^-?[0-9]{1,13}(\.[0-9]{1,8})?$"
#: dedupkit's own limits, merged into the schema's before it is compiled (dotted paths from the
#: event item; ``[]`` steps into array items). Pinterest parses these strings; the patterns are
#: what :mod:`dedupkit.event.data` produces.
OWN_LIMITS: Mapping[str, Mapping[str, Any]] = {
    "action_source": {"enum": ["web", "app_android", "app_ios", "offline"]},
    "event_id": {"minLength": 1, "maxLength": 256},
    "event_name": {"minLength": 1, "maxLength": 256},
    "event_time": {"minimum": 1},
    "event_source_url": {"maxLength": MAX_URL_LENGTH},
    "custom_data.value": {"pattern": _DECIMAL},
    "custom_data.predicted_ltv": {"pattern": _DECIMAL},
    "custom_data.currency": {"pattern": r"^[A-Z]{3}$"},
    "custom_data.num_items": {"minimum": 0},
    "custom_data.contents[].item_price": {"pattern": _DECIMAL},
    "custom_data.contents[].quantity": {"minimum": 0},
}

_ANNOTATIONS = frozenset(
    {"description", "title", "examples", "default", "deprecated", "$comment", "$schema", "$id"}
)
_HANDLED = frozenset(
    {
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "enum",
        "minimum",
        "maximum",
        "format",
        "$ref",
        "anyOf",
    }
)
_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list, tuple),
    "object": (Mapping,),
}


class _Violation(Exception):
    """Raised deep in a check; containers prepend their key on the way out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def at(self, step: str) -> _Violation:
        """This violation, one step further from the event's root (steps are added inside out)."""
        self.path.append(step)
        return self


#: A compiled check: raises :class:`_Violation`, returns the characters of strings it saw.
_Check = Callable[[Any], int]


def check_capi_event(payload: Mapping[str, Any]) -> None:
    """Refuse an event (one item of the request's ``data``) Pinterest's schema would refuse.

    :raises InvalidEvent: naming the field, e.g. ``custom_data.contents[1].quantity``; the
        message never repeats the value (it may hold a client IP or user agent).
    """
    try:
        size = _EVENT_CHECK(payload)
    except _Violation as violation:
        where = "".join(reversed(violation.path)).lstrip(".")
        raise InvalidEvent(f"{where or 'event'} {violation.message}") from None
    if size > MAX_EVENT_CHARS:
        raise InvalidEvent(f"event holds more than {MAX_EVENT_CHARS} characters of text")


def is_clean_text(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8, i.e. holds no lone surrogate (``"\\ud800"``)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- compiling the schema into checks ------------------------------------------------------

#: Assertion keywords of the schema this module does not check; a test keeps it empty.
UNCHECKED_KEYWORDS: set[str] = set()


def _compile(schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> _Check:
    """One check for the value at ``path``: a dispatch on the value's exact type."""
    if "$ref" in schema:
        target = _resolve(root, str(schema["$ref"]))
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    schema = {**schema, **OWN_LIMITS.get(path, {})}
    for keyword in schema:
        if keyword not in _HANDLED and keyword not in _ANNOTATIONS and not keyword.startswith("x-"):
            UNCHECKED_KEYWORDS.add(keyword)

    declared = schema.get("type", list(_TYPES))
    names = [declared] if isinstance(declared, str) else list(declared)
    by_type: dict[type, _Check] = {}
    for name in names:
        if name == "string":
            by_type[str] = _string_check(schema)
        elif name in ("integer", "number"):
            by_type[int] = _range_check(schema)
            if name == "number":
                by_type[float] = _range_check(schema)
        elif name == "boolean":
            by_type[bool] = _nothing
        elif name == "null":
            by_type[type(None)] = _nothing
        elif name == "array":
            by_type[list] = by_type[tuple] = _array_check(schema, root, path)
        elif name == "object":
            by_type[dict] = _object_check(schema, root, path)
    if "enum" in schema:
        allowed = _enum_check(schema["enum"])
        by_type = {kind: allowed if kind is str else one for kind, one in by_type.items()}
    wanted = " or ".join(names)

    def check(value: Any) -> int:
        one = by_type.get(type(value))
        if one is None:
            if isinstance(value, Mapping) and dict in by_type:  # MappingProxyType, say
                one = by_type[dict]
            else:
                raise _Violation(f"must be of type {wanted}, got {type(value).__name__}")
        return one(value)

    return check


def _nothing(value: Any) -> int:
    return 0


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    result: Mapping[str, Any] = node
    return result


def _enum_check(values: Sequence[Any]) -> _Check:
    allowed = frozenset(v for v in values if isinstance(v, str))
    listed = ", ".join(sorted(allowed))

    def check(value: str) -> int:
        if value not in allowed:
            raise _Violation(f"must be one of {listed}")
        return len(value)

    return check


def _string_check(schema: Mapping[str, Any]) -> _Check:
    longest = int(schema.get("maxLength", MAX_STRING_LENGTH))
    shortest = int(schema.get("minLength", 0))
    pattern = schema.get("pattern")
    search = re.compile(pattern).search if pattern else None

    def check(value: str) -> int:
        length = len(value)
        if length > longest:
            raise _Violation(f"must be at most {longest} characters, got {length}")
        if length < shortest:
            raise _Violation(f"must be at least {shortest} characters")
        if not value.isascii() and not is_clean_text(value):
            raise _Violation("must be valid Unicode text (it holds a lone surrogate)")
        if search is not None and search(value) is None:
            raise _Violation(f"must match {pattern}")
        return length

    return check


def _range_check(schema: Mapping[str, Any]) -> _Check:
    low: float = -math.inf
    high: float = math.inf
    if schema.get("format") == "int64":
        low, high = INT64_MIN, INT64_MAX
    low = max(low, schema.get("minimum", low))
    high = min(high, schema.get("maximum", high))

    bounds = "" if math.isinf(low) and math.isinf(high) else f" from {low} to {high}"

    def check(value: float) -> int:
        # NaN fails both comparisons, hence the negation.
        if not low <= value <= high or value in (math.inf, -math.inf):
            raise _Violation(f"must be a finite number{bounds}")
        return 0

    return check


def _array_check(schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> _Check:
    most = int(schema.get("maxItems", MAX_ARRAY_ITEMS))
    fewest = int(schema.get("minItems", 0))
    item = _compile(schema.get("items", {"type": "string"}), root, path + "[]")

    def check(value: Sequence[Any]) -> int:
        if len(value) > most:
            raise _Violation(f"must hold at most {most} items, got {len(value)}")
        if len(value) < fewest:
            raise _Violation(f"must hold at least {fewest} items")
        size = 0
        for index, element in enumerate(value):
            try:
                size += item(element)
            except _Violation as violation:
                raise violation.at(f"[{index}]") from None
        return size

    return check


def _object_check(schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> _Check:
    if "anyOf" in schema:
        return _any_of_check(schema["anyOf"], root, path)
    prefix = path + "." if path else ""
    properties = {
        key: _compile(sub, root, prefix + key) for key, sub in schema.get("properties", {}).items()
    }
    required = tuple(schema.get("required", ()))
    closed = schema.get("additionalProperties") is False
    # Keys the schema leaves open (user_data's) still get bounds: every user_data field is a
    # string or a list of strings.
    other = _compile(_OPEN_FIELD, root, prefix + "*")

    def check(value: Mapping[str, Any]) -> int:
        for key in required:
            if key not in value:
                raise _Violation("is required").at(f".{key}")
        size = 0
        for key, element in value.items():
            sub = properties.get(key)
            if sub is None:
                if closed or type(key) is not str:
                    raise _Violation("is not a field Pinterest accepts").at(f".{str(key)[:64]}")
                sub = other
            try:
                size += sub(element) + len(key)
            except _Violation as violation:
                raise violation.at(f".{key}") from None
        return size

    return check


_OPEN_FIELD: Mapping[str, Any] = {
    "type": ["string", "array", "null"],
    "items": {"type": "string"},
    "maxItems": 100,
}


def _any_of_check(branches: Sequence[Any], root: Mapping[str, Any], path: str) -> _Check:
    # user_data's anyOf: the same properties, each branch with its own required keys. Check the
    # properties once, then that one set of required keys is present.
    refs = {branch.get("$ref") for branch in branches}
    allowed = {"$ref", "required", *_ANNOTATIONS}
    if len(refs) != 1 or not all(set(branch) <= allowed for branch in branches):
        raise ValueError(f"{path}: only anyOf branches of one $ref and required keys are supported")
    common = _compile({"$ref": next(iter(refs))}, root, path)
    alternatives = [tuple(branch.get("required", ())) for branch in branches]
    wanted = "; ".join(" and ".join(keys) for keys in alternatives)

    def check(value: Mapping[str, Any]) -> int:
        size = common(value)
        for keys in alternatives:
            if all(key in value for key in keys):
                return size
        raise _Violation(f"must hold one of: {wanted}")

    return check


def _event_check() -> _Check:
    root = load_request_schema()
    events = _resolve(root, "#/$defs/ConversionEvents")["properties"]["data"]["items"]
    return _compile(events, root, "")


_EVENT_CHECK = _event_check()
