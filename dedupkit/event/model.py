"""The :class:`Event`: one user action, described once, rendered for both channels."""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ..errors import InvalidEvent
from ..vocabulary import SkipReason
from .data import text, to_custom_data
from .limits import MAX_DEPTH
from .names import STANDARD, EventName, EventNames
from .page_url import clean_page_url
from .user_data import UserDataHasher, has_required_identity

#: Longest event_id accepted. Pinterest sets no limit; this keeps ids sane in URLs and logs.
MAX_EVENT_ID_LENGTH = 256
#: ``action_source`` values Pinterest lists.
ACTION_SOURCES = frozenset({"web", "app_android", "app_ios", "offline"})


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """An event ready for both channels; PII in it is already hashed.

    Build one with :meth:`dedupkit.DedupKit.track` (or :func:`build_event`); the same
    ``event_id`` goes to ``pintrk`` through :meth:`to_pintrk` and to the API through
    :meth:`to_capi`, which is what lets Pinterest count it once.
    """

    name: EventName
    event_id: str
    #: Unix seconds.
    event_time: int
    user_data: Mapping[str, Any] = field(default_factory=_empty)
    custom_data: Mapping[str, Any] = field(default_factory=_empty)
    #: The event data in the tag's vocabulary, as the caller gave it (no PII).
    tag_data: Mapping[str, Any] = field(default_factory=_empty)
    event_source_url: str | None = None
    action_source: str = "web"
    opt_out: bool | None = None
    language: str | None = None
    partner_name: str | None = field(default=None, repr=False)
    #: What :meth:`~dedupkit.DedupKit.track` did with it on the API channel: ``"queued"``,
    #: ``"duplicate"``, ``"skipped"``, ``"kept_in_memory"`` or ``"disabled"`` (a
    #: :class:`~dedupkit.intake.record.IntakeOutcome`, a ``str`` enum); ``None`` for an event
    #: only built.
    outcome: str | None = field(default=None, compare=False)
    #: Why it was not sent, when ``outcome == "skipped"``: ``"bot"``, ``"no_consent"``,
    #: ``"no_identity"`` or ``"gpc_opt_out"``.
    skipped: SkipReason | None = field(default=None, compare=False)

    @property
    def capi_name(self) -> str:
        """The CAPI spelling, e.g. ``add_to_cart``."""
        return self.name.capi

    @property
    def tag_name(self) -> str | None:
        """The ``pintrk`` spelling, e.g. ``addtocart``; ``None`` for app-only events."""
        return self.name.tag

    @property
    def key(self) -> tuple[str, str]:
        """What Pinterest deduplicates on, and what dedupkit sends once: (name, event_id)."""
        return (self.name.capi, self.event_id)

    def to_capi(self) -> dict[str, Any]:
        """The event as sent to ``POST /ad_accounts/{id}/events`` (one item of ``data``)."""
        body: dict[str, Any] = {
            "event_name": self.name.capi,
            "action_source": self.action_source,
            "event_time": self.event_time,
            "event_id": self.event_id,
            "user_data": _thaw(self.user_data),
        }
        if self.custom_data:
            body["custom_data"] = _thaw(self.custom_data)
        if self.event_source_url:
            body["event_source_url"] = self.event_source_url
        if self.opt_out is not None:
            body["opt_out"] = self.opt_out
        if self.language:
            body["language"] = self.language
        if self.partner_name:
            body["partner_name"] = self.partner_name
        return body

    def to_pintrk(self) -> dict[str, Any]:
        """The data passed to ``pintrk('track', tag_name, …)``, with the same event_id."""
        data = {key: _json_safe(_thaw(value)) for key, value in self.tag_data.items()}
        if "currency" in self.custom_data:
            # The API's normalised code ("usd" -> "USD"): both channels must say the same.
            data["currency"] = self.custom_data["currency"]
        data["event_id"] = self.event_id
        return data


def build_event(
    name: str | EventName,
    data: Mapping[str, Any] | None = None,
    *,
    names: EventNames = STANDARD,
    hasher: UserDataHasher | None = None,
    event_id: str | None = None,
    event_time: int | float | dt.datetime | None = None,
    event_source_url: str | None = None,
    user: Mapping[str, Any] | None = None,
    action_source: str = "web",
    opt_out: bool | None = None,
    language: str | None = None,
    partner_name: str | None = None,
    require_identity: bool = True,
) -> Event:
    """Validate, translate and hash one event.

    :param data: the event data in the tag's vocabulary (``value``, ``line_items``, …).
    :param name: a CAPI or tag spelling of a Pinterest event, ``custom``, or an
        advertiser-defined name known to ``names``.
    :param event_id: defaults to ``"<capi name>-<order_id>"`` when ``order_id`` is given
        (a reloaded thank-you page then repeats the same id), else a random UUIDv4.
    :param user: raw PII and clear fields (IP, user agent, click id); hashed here.
    :raises InvalidEvent: naming the field that is wrong.
    """
    if data is not None and not isinstance(data, Mapping):
        raise InvalidEvent(f"event data must be a mapping, got {type(data).__name__}")
    event_data = dict(data or {})
    resolved = names.resolve(name)
    if action_source not in ACTION_SOURCES:
        raise InvalidEvent(
            f"action_source must be one of {sorted(ACTION_SOURCES)}, got {action_source!r}"
        )
    if opt_out is not None and not isinstance(opt_out, bool):
        raise InvalidEvent(f"opt_out must be True, False or None, got {type(opt_out).__name__}")
    # The hasher bounds every value before any work and raises InvalidEvent naming the field.
    user_data = (hasher or UserDataHasher()).hash(user)
    if require_identity and not has_required_identity(user_data):
        raise InvalidEvent(
            f"event {resolved.capi!r} needs an email, a mobile ad id, or both the client IP "
            "and user agent in user data (Pinterest rejects it otherwise)"
        )
    # Translated first: it checks every key and value, the order id included.
    custom_data = to_custom_data(event_data)
    return Event(
        name=resolved,
        event_id=_event_id(resolved.capi, event_id, custom_data.get("order_id")),
        event_time=_event_time(event_time),
        user_data=_freeze(user_data),
        custom_data=_freeze(custom_data),
        tag_data=_freeze(event_data),
        # Optional: an odd or over-long page URL is trimmed or dropped, the event kept.
        event_source_url=clean_page_url(event_source_url),
        action_source=action_source,
        opt_out=opt_out,
        language=_optional_text(language, "language", 64),
        partner_name=_optional_text(partner_name, "partner_name", 256),
    )


def _optional_text(value: object, field: str, limit: int) -> str | None:
    return None if value is None or value == "" else text(value, field, limit)


def _event_id(capi_name: str, event_id: object, order_id: object) -> str:
    if event_id is None:
        if order_id not in (None, ""):
            event_id = f"{capi_name}-{order_id}"
        else:
            return str(uuid.uuid4())
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidEvent(f"event_id must be a non-empty string, got {event_id!r}")
    if len(event_id) > MAX_EVENT_ID_LENGTH or not event_id.isprintable():
        raise InvalidEvent(f"event_id must be at most {MAX_EVENT_ID_LENGTH} printable characters")
    return event_id


def _event_time(value: int | float | dt.datetime | None) -> int:
    if value is None:
        return int(time.time())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InvalidEvent("event_time must be timezone-aware when given as a datetime")
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(f"event_time must be Unix seconds, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidEvent(f"event_time must be finite Unix seconds, got {value!r}")
    if value > 10**11:
        # A JavaScript Date.now() slipped through: Pinterest wants seconds.
        raise InvalidEvent(f"event_time must be Unix seconds, not milliseconds: {value!r}")
    if value <= 0:
        raise InvalidEvent(f"event_time must be positive Unix seconds, got {value!r}")
    return int(value)


# _freeze and _thaw run for every value of every event: exact type checks first, because an
# isinstance() against the Mapping ABC costs several times more (measured in bench/).
_SCALARS = (str, int, float, bool, type(None))


def _freeze(value: Any, depth: int = 0) -> Any:
    """A deep read-only copy: an Event's data cannot change once built.

    :raises InvalidEvent: for data nested deeper than :data:`MAX_DEPTH`, or a string that is
        not text (a lone surrogate), before either reaches storage or the wire.
    """
    kind = type(value)
    if kind is str:
        if not value.isascii():
            text(value, "event data")
        return value
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise InvalidEvent(f"event data must not be nested more than {MAX_DEPTH} levels deep")
    if kind is dict or kind is MappingProxyType or isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v, depth + 1) for k, v in value.items()})
    if kind is list or kind is tuple:
        return tuple([_freeze(v, depth + 1) for v in value])
    return value


def _thaw(value: Any) -> Any:
    """Plain dicts and lists again, fresh for every payload."""
    kind = type(value)
    if kind is MappingProxyType:
        return {k: v if type(v) in _SCALARS else _thaw(v) for k, v in value.items()}
    if kind is tuple:
        return [v if type(v) in _SCALARS else _thaw(v) for v in value]
    # An Event built by hand may hold plain containers: copy those too.
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if kind is list:
        return [_thaw(v) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
