"""Pinterest event names: the CAPI spelling and the tag spelling of each standard event.

Pinterest deduplicates a tag event and a CAPI event only when both describe the same event,
so every name a caller may use (``AddToCart``, ``addtocart``, ``add_to_cart``) resolves through
one explicit table rather than a CamelCase-to-snake rule, which breaks on ``SignUp``.
Sources: pinterest.md §3.1 and §11.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import UnknownEventName

#: CAPI ``event_name`` → the tag's ``pintrk('track', …)`` name; ``None`` for app-only events.
TAG_NAMES: Mapping[str, str | None] = MappingProxyType(
    {
        "add_payment_info": "addpaymentinfo",
        "add_to_cart": "addtocart",
        "add_to_wishlist": "addtowishlist",
        "app_install": None,
        "app_open": None,
        "checkout": "checkout",
        "contact": "contact",
        "custom": "custom",
        "customize_product": "customizeproduct",
        "find_location": "findlocation",
        "initiate_checkout": "initiatecheckout",
        "lead": "lead",
        "page_visit": "pagevisit",
        "schedule": "schedule",
        "search": "search",
        "signup": "signup",
        "start_trial": "starttrial",
        "submit_application": "submitapplication",
        "subscribe": "subscribe",
        "view_category": "viewcategory",
        "view_content": "viewcontent",
        "watch_video": "watchvideo",
    }
)

#: Spellings the lookup key alone would not catch. Only ones the browser snippet maps the same
#: way (lowercase, separators removed) belong here, or tag and CAPI names would disagree.
_ALIASES: Mapping[str, str] = MappingProxyType({"sign_up": "signup"})


#: Other platforms' names (Meta, GA4, TikTok) for a Pinterest event: suggested, never mapped,
#: since a silent rename would hide which event the shop's own dashboards count.
_ELSEWHERE: Mapping[str, str] = MappingProxyType(
    {
        "purchase": "checkout",
        "completepayment": "checkout",
        "placeanorder": "checkout",
        "begincheckout": "initiate_checkout",
        "viewitem": "view_content",
        "viewitemlist": "view_category",
        "pageview": "page_visit",
        "completeregistration": "signup",
        "generatelead": "lead",
        "submitform": "lead",
        "starttrialsubscription": "start_trial",
    }
)


def _key(name: str) -> str:
    # Pinterest trims raw tag names; case and separators differ between its own integrations.
    return "".join(name.split()).replace("_", "").replace("-", "").lower()


_LOOKUP: Mapping[str, str] = MappingProxyType(
    {
        **{_key(capi): capi for capi in TAG_NAMES},
        **{_key(tag): capi for capi, tag in TAG_NAMES.items() if tag},
        **{_key(alias): capi for alias, capi in _ALIASES.items()},
    }
)


@dataclass(frozen=True, slots=True)
class EventName:
    """A resolved event name: how CAPI and the tag each spell it."""

    capi: str
    #: ``None`` for app-only events, which the browser tag cannot send.
    tag: str | None
    #: True for an advertiser-defined name, passed through unchanged on both channels.
    advertiser_defined: bool = False


class EventNames:
    """Resolves any accepted spelling to an :class:`EventName`.

    :param advertiser_defined: names configured in Ads Manager as advertiser-defined events;
        Pinterest requires them to match exactly, so they are never re-spelled.
    """

    def __init__(self, advertiser_defined: Iterable[str] = ()) -> None:
        self.advertiser_defined = frozenset(name.strip() for name in advertiser_defined)

    def resolve(self, name: str | EventName) -> EventName:
        """:raises UnknownEventName: naming the event, when it is none of the accepted names.

        An :class:`EventName` is already resolved and comes back as it is, so a caller that
        resolved a name once can pass the result on without a second look-up.
        """
        if isinstance(name, EventName):
            return name
        if not isinstance(name, str) or not name.strip():
            raise UnknownEventName(f"event name must be a non-empty string, got {name!r}")
        stripped = name.strip()
        if stripped in self.advertiser_defined:
            return EventName(stripped, stripped, advertiser_defined=True)
        capi = _LOOKUP.get(_key(stripped))
        if capi is None:
            raise UnknownEventName(
                f"unknown Pinterest event {name!r}{_suggestion(stripped)}: use a standard "
                f"event name (e.g. 'checkout', 'add_to_cart'), 'custom', or list it in "
                f"DEDUPKIT_ADVERTISER_EVENTS if it is advertiser-defined"
            )
        return EventName(capi, TAG_NAMES[capi])

    def capi_name(self, name: str) -> str:
        """The CAPI spelling of ``name``."""
        return self.resolve(name).capi


def _suggestion(name: str) -> str:
    """``" (did you mean 'checkout'?)"``: another platform's name or a near spelling."""
    key = _key(name)[:64]
    capi = _ELSEWHERE.get(key)
    if capi is None:
        close = difflib.get_close_matches(key, list(_LOOKUP), n=1, cutoff=0.8)
        capi = _LOOKUP[close[0]] if close else None
    return f" (did you mean {capi!r}?)" if capi else ""


#: The resolver for standard names only.
STANDARD = EventNames()
