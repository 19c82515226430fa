"""One privacy decision for both channels: Global Privacy Control and Limited Data Processing.

``Sec-GPC: 1`` (``navigator.globalPrivacyControl`` in the page) is a legal opt-out of the sale
or sharing of personal data in California and other states. ``DEDUPKIT_GPC`` says what it
does to an event:

- ``"ldp"`` (default): sent, flagged for Pinterest's Limited Data Processing: CAPI
  ``custom_data.opt_out_type = "LDP"`` with SHA-256 ``st`` and ``country`` in ``user_data``
  (Pinterest applies LDP only when they say California, US); the tag gets
  ``pintrk('set', {opt_out_type: 'LDP', st, country})`` before its event;
- ``"opt_out"``: sent on neither channel;
- ``"ignore"``: sent as any other event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .visitor import Visitor

#: The only ``opt_out_type`` Pinterest processes.
LDP = "LDP"


class Treatment(enum.Enum):
    """What the privacy rules do to one event."""

    SEND = "send"
    LDP = "ldp"
    OPT_OUT = "opt_out"


def treatment(mode: str, gpc: bool) -> Treatment:
    """The treatment of an event whose visitor sent (``gpc``) or did not send a GPC signal."""
    if not gpc or mode == "ignore":
        return Treatment.SEND
    return Treatment.OPT_OUT if mode == "opt_out" else Treatment.LDP


def ldp_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data (tag vocabulary) flagged for LDP; it becomes ``custom_data.opt_out_type``."""
    return {**data, "opt_out_type": LDP}


def ldp_user(user: Mapping[str, Any], visitor: Visitor | None) -> dict[str, Any]:
    """``user`` with the visitor's state and country from the CDN, unless ``user`` has them."""
    out = dict(user)
    if visitor is None:
        return out
    if visitor.region and not ({"state", "st"} & out.keys()):
        out["state"] = visitor.region
    if visitor.country and not ({"country"} & out.keys()):
        out["country"] = visitor.country
    return out


def ldp_tag_settings(user_data: Mapping[str, Any]) -> dict[str, str]:
    """The ``pintrk('set', …)`` argument of an LDP event: hashed ``st``/``country`` if known."""
    settings = {"opt_out_type": LDP}
    for key in ("st", "country"):
        values = user_data.get(key)
        if values:
            settings[key] = values[0]
    return settings


def is_ldp(custom_data: Mapping[str, Any]) -> bool:
    return custom_data.get("opt_out_type") == LDP
