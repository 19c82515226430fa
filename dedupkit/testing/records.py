"""What the fake saw: immutable records, and the merge Pinterest does before counting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownEventName
from ..event.names import STANDARD

#: ``Conversion.sources`` members.
TAG = "tag"
CAPI = "capi"


@dataclass(frozen=True, slots=True)
class TagEvent:
    """One ``pintrk('track', name, data)`` call reported by the stand-in tag."""

    #: The tag id given to ``pintrk('load', …)``, ``None`` if the page never loaded one.
    tag_id: str | None
    #: The event name exactly as given to ``pintrk``.
    event_name: str
    #: ``data["event_id"]`` as a string, ``None`` when the call carried none.
    event_id: str | None
    data: dict[str, Any]
    #: ``location.href`` of the page that made the call.
    page_url: str | None
    #: The click id the tag saw: the URL's ``epik`` parameter, else the ``_epik`` cookie.
    epik: str | None
    #: The last ``pintrk('setconsent', …)`` value, ``None`` if never set.
    consent: bool | None
    received_at: float


@dataclass(frozen=True, slots=True)
class PageCall:
    """One ``pintrk('page', data)`` call reported by the stand-in tag."""

    tag_id: str | None
    data: dict[str, Any]
    page_url: str | None
    epik: str | None
    consent: bool | None
    received_at: float


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request to the Conversions API endpoint and the status it was answered with."""

    #: ``time.time()`` when the request arrived.
    received_at: float
    path: str
    status: int
    #: Events in the body (0 when it had no readable ``data`` list).
    num_events: int
    #: Sent with ``?test=true``.
    test: bool


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    """A Conversions API request refused for what it was (bad token, account, body)."""

    received_at: float
    path: str
    status: int
    #: The message the fake answered with.
    reason: str
    #: The parsed JSON body, or its text when it was not JSON. Headers are not kept.
    body: object


@dataclass(frozen=True, slots=True)
class Conversion:
    """What Pinterest would count once: tag and CAPI events sharing (CAPI name, event_id)."""

    #: The CAPI spelling (tag names resolved through :data:`dedupkit.event.names.STANDARD`).
    event_name: str
    #: ``None`` for a tag call without an event_id, which nothing can be deduplicated with.
    event_id: str | None
    #: ``"tag"``, ``"capi"`` or both.
    sources: frozenset[str]
    tag_events: tuple[TagEvent, ...] = ()
    capi_events: tuple[dict[str, Any], ...] = ()


def capi_name_of_tag_event(name: str) -> str:
    """The CAPI name Pinterest matches a tag event name against; unknown names stay as given."""
    try:
        return STANDARD.resolve(name).capi
    except UnknownEventName:
        return name


def merge_conversions(arrivals: Iterable[TagEvent | Mapping[str, Any]]) -> list[Conversion]:
    """Group tag events and CAPI event dicts, given in arrival order, into conversions.

    The key is (CAPI event name, event_id). The CAPI name is taken as sent, so a CAPI event
    misspelled on the server side does not merge with its tag twin, as it would not at
    Pinterest. Tag events without an event_id each count on their own. Conversions come in
    the order of their first event.
    """
    groups: dict[object, tuple[str, str | None, list[TagEvent], list[dict[str, Any]]]] = {}
    for index, item in enumerate(arrivals):
        if isinstance(item, TagEvent):
            name, event_id = capi_name_of_tag_event(item.event_name), item.event_id
        else:
            name, event_id = str(item["event_name"]), str(item["event_id"])
        key: object = (name, event_id) if event_id else ("#no-event-id", index)
        group = groups.setdefault(key, (name, event_id, [], []))
        if isinstance(item, TagEvent):
            group[2].append(item)
        else:
            group[3].append(dict(item))
    return [
        Conversion(
            name,
            event_id,
            frozenset(source for source, seen in ((TAG, tags), (CAPI, capis)) if seen),
            tuple(tags),
            tuple(capis),
        )
        for name, event_id, tags, capis in groups.values()
    ]
