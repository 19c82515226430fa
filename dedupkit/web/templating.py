"""The Jinja global ``dedupkit``: ``{{ dedupkit.head() }}`` and ``{{ dedupkit.pintrk(event) }}``.

Everything goes through :func:`markupsafe.escape` or :func:`jinja2.utils.htmlsafe_json_dumps`,
so no event value can close the ``<script>`` it is written into.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import g, has_request_context, url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from ..event.model import Event
from ..event.user_data import sha256_hex
from ..intake import privacy, tickets
from ..intake.record import current_visitor
from ..state import get_state
from .assets import queue_stub, snippet

#: ``g`` key: CDN geo headers this response's HTML depends on (``Vary``, see intake).
VARY_KEY = "_dedupkit_vary"

# Pinterest's base code (pinterest.md §8.1), marking the queue blocked when core.js cannot load
# (an ad blocker: the snippet then reports the tag as not fired), with the core.js injection
# behind a consent test run in the browser: the HTML is then the same for every visitor, so a
# full-page cache cannot serve one visitor's "yes" to another. dedupkit.js reads the same cookie
# and injects core.js (data-pintrk-src) only when this code held it back and the visitor later
# says yes.
_BASE_CODE = (
    "!function(e,c){if(!window.pintrk){window.pintrk=function(){window.pintrk.queue.push("
    'Array.prototype.slice.call(arguments))};var n=window.pintrk;n.queue=[],n.version="3.0";'
    'if(c){var t=document.createElement("script");t.async=!0,t.src=e,'
    "t.onerror=function(){n.blocked=1};"
    'var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r)}}}'
    "({src},{consented});"
)


def _consent_test(cookie: str, required: bool) -> str:
    """JavaScript that is true when the tag may load: a stored yes, or no stored no."""
    # Cookie names are checked against settings.COOKIE_NAME at start-up: regex- and script-safe.
    if required:
        return f"/(^|; ){cookie}=1(;|$)/.test(document.cookie)"
    return f"!/(^|; ){cookie}=0(;|$)/.test(document.cookie)"


def _noscript_pixel(pixel_url: str, query: dict[str, str]) -> str:
    """Pinterest's ``<noscript>`` image (pinterest.md §8.1, §10.1), escaped for HTML."""
    src = f"{pixel_url}?{urlencode({**query, 'noscript': '1'})}"
    return (
        '<noscript><img height="1" width="1" style="display:none;" alt="" '
        f'src="{escape(src)}" /></noscript>'
    )


class TemplateHelpers:
    """Exposed to templates as ``dedupkit``."""

    def head(self) -> Markup:
        """Pinterest's base code, the queue stub and the deferred snippet, for ``<head>``."""
        state = get_state()
        s = state.settings
        if not state.enabled:
            return Markup("")
        tag_id = s.tag_id
        pintrk_src = s.pintrk_src
        page_visit = s.page_visit
        consent_cookie = s.consent_cookie

        # Nothing here depends on the visitor: cached pages stay right for everyone.
        parts: list[str] = []
        if tag_id:
            code = _BASE_CODE.replace("{src}", htmlsafe_json_dumps(pintrk_src)).replace(
                "{consented}", _consent_test(consent_cookie, s.require_consent)
            )
            calls = f"pintrk('load',{htmlsafe_json_dumps(str(tag_id))});"
            if not page_visit:
                # With automatic page_visit the snippet fires 'pagevisit' with an event_id;
                # a bare pintrk('page') too would count the visit twice (Woo PR #1178).
                calls += "pintrk('page');"
            parts.append(f"<script>{code}{calls}</script>")
            if not s.require_consent:
                # A visitor without JavaScript cannot say yes: the pixel only where none is asked.
                parts.append(_noscript_pixel(s.pixel_url, {"tid": tag_id}))
        parts.append(f"<script>{queue_stub()}</script>")

        _, version = snippet()
        attrs = {
            "src": url_for("dedupkit.script", v=version),
            "data-endpoint": url_for("dedupkit.events"),
            "data-tag-id": tag_id,
            "data-page-visit": "1" if page_visit else None,
            "data-require-consent": "1" if s.require_consent else None,
            "data-pintrk-src": pintrk_src if tag_id else None,
            "data-epik-cookie": s.click_id_cookie,
            "data-consent-cookie": consent_cookie,
            "data-cookie-domain": s.cookie_domain,
            "data-custom-names": " ".join(sorted(state.names.advertiser_defined)) or None,
            "data-gpc": s.gpc,
            **_ldp_geo_attributes(),
        }
        rendered = "".join(
            f' {name}="{escape(value)}"' for name, value in attrs.items() if value is not None
        )
        parts.append(f"<script defer{rendered}></script>")
        return Markup("\n".join(parts))

    def pintrk(self, event: Event | None) -> Markup:
        """Fire the tag for an event the server tracked, with the same event_id.

        Renders nothing when there is no event, no tag name (app-only events), or the
        visitor has not consented: the server did not send it either.
        """
        if event is None or event.tag_name is None:
            return Markup("")
        state = get_state()
        if not state.enabled:
            return Markup("")
        if has_request_context():
            visitor = current_visitor(state)
            if not visitor.may_send(state.settings.require_consent):
                return Markup("")
            treatment = privacy.treatment(state.settings.gpc, visitor.gpc)
            if treatment is privacy.Treatment.OPT_OUT:
                return Markup("")  # the server did not send it either
        name = htmlsafe_json_dumps(event.tag_name)
        data = htmlsafe_json_dumps(event.to_pintrk())
        capi_name = htmlsafe_json_dumps(event.capi_name)
        ldp = ""
        if privacy.is_ldp(event.custom_data):
            # The same flag and hashed st/country as the CAPI copy, set before the event.
            settings = htmlsafe_json_dumps(privacy.ldp_tag_settings(event.user_data))
            ldp = f"window.pintrk&&pintrk('set',{settings});"
        # Through the snippet (or its stub) when there: it fires the tag and tells the server
        # whether the call happened. Without it (blocked), a plain tag call.
        script = (
            f"<script>{ldp}!function(d,t,x,n){{d&&d.mirror?d.mirror(t,x,n):"
            f"window.pintrk&&pintrk('track',t,x)}}(window.dedupkit,{name},{data},{capi_name})"
            "</script>"
        )
        tag_id = state.settings.tag_id
        if not tag_id:
            return Markup(script)
        # Without JavaScript the image pixel reports the event, with the same event_id.
        query = {"tid": tag_id, "event": event.tag_name}
        for key, value in event.to_pintrk().items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                query[f"ed[{key}]"] = str(value)
        return Markup(script + _noscript_pixel(state.settings.pixel_url, query))

    def ticket(self, name: str, **fields: Any) -> str:
        """``kit.ticket(…)`` for templates: ``{{ dedupkit.ticket('checkout', …)|tojson }}``."""
        state = get_state()
        return tickets.mint(state.signing_keys(), state.names, name, **fields)


def _ldp_geo_attributes() -> dict[str, str | None]:
    """``data-ldp-st``/``data-ldp-country`` from the CDN's geo headers, SHA-256 hashed.

    Only with ``DEDUPKIT_GEO_*_HEADER`` set: the HTML then depends on the visitor's region,
    and the response says so in ``Vary`` so that a cache keeps one copy per region.
    """
    state = get_state()
    s = state.settings
    headers = [h for h in (s.geo_region_header, s.geo_country_header) if h]
    if not headers or not has_request_context() or s.gpc != "ldp":
        return {}
    g.setdefault(VARY_KEY, set()).update(headers)
    visitor = current_visitor(state)
    return {
        "data-ldp-st": sha256_hex(visitor.region) if visitor.region else None,
        "data-ldp-country": sha256_hex(visitor.country) if visitor.country else None,
    }
