"""The Jinja global ``dedupkit``: ``{{ dedupkit.head() }}`` and ``{{ dedupkit.pintrk(event) }}``.

Everything goes through :func:`markupsafe.escape` or :func:`jinja2.utils.htmlsafe_json_dumps`,
so no event value can close the ``<script>`` it is written into.

Content-Security-Policy: under a nonce-based policy (no ``'unsafe-inline'``) an inline script
runs only when it carries the response's nonce. Every script written here carries it, found
where extensions put it: Flask-Talisman (``content_security_policy_nonce_in=['script-src']``)
sets ``request.csp_nonce``, others ``g.csp_nonce``. ``DEDUPKIT_CSP_NONCE``, a callable
``(request) -> str | None``, names another place; ``head(nonce=…)`` and
``pintrk(event, nonce=…)`` beat both.

A forgotten ``head()``: without the base code, the stub and the snippet, ``pintrk(event)``
renders a script that finds no tag to call, and the API alone counts the conversion. Each
response that rendered ``pintrk(event)`` or tracked an event for the tag is checked as it
leaves (:func:`warn_if_head_missing`): a full HTML page without ``head()``, and without
Pinterest's own base code pasted in, logs a warning naming the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import Request, g, has_request_context, request, url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape
from werkzeug.wrappers import Response

from ..event.model import Event
from ..event.user_data import sha256_hex
from ..intake import privacy, tickets
from ..intake.record import current_visitor
from ..state import get_state
from .assets import queue_stub, snippet

logger = logging.getLogger("dedupkit")

#: ``g`` key: CDN geo headers this response's HTML depends on (``Vary``, see intake).
VARY_KEY = "_dedupkit_vary"
#: ``g`` keys: ``head()`` was rendered; the events this response should fire the tag for.
_HEAD_KEY = "_dedupkit_head"
_EVENTS_KEY = "_dedupkit_tag_events"
#: Event names kept per request for the warning: enough to name the page's events.
_MAX_NAMES = 5
#: The start of a full page: a fragment (htmx, Turbo) lives in a page that has its head.
_HEAD_TAG = re.compile(rb"<head[\s>]", re.I)
#: What a nonce may be: base64 or base64url text (CSP's ``nonce-source``), of sane length.
_NONCE = re.compile(r"^[A-Za-z0-9+/_=-]{1,256}$")

# Pinterest's base code (pinterest.md §8.1), marking the queue blocked when core.js cannot load
# (an ad blocker: the snippet then reports the tag as not fired), with the core.js injection
# behind a consent test run in the browser: the HTML is then the same for every visitor, so a
# full-page cache cannot serve one visitor's "yes" to another. dedupkit.js reads the same cookie
# and injects core.js (data-pintrk-src) only when this code held it back and the visitor later
# says yes.
_BASE_CODE = (
    "!function(e,c){if(!window.pintrk){window.pintrk=function(){window.pintrk.queue.push("
    'Array.prototype.slice.call(arguments))};var n=window.pintrk;n.queue=[],n.version="3.0";'
    'if(c){var t=document.createElement("script");t.async=!0,t.src=e,{nonce}'
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


def _noscript_pixel(pixel_url: str, query: dict[str, str], nonce: str | None) -> str:
    """Pinterest's ``<noscript>`` image (pinterest.md §8.1, §10.1), escaped for HTML.

    It carries the nonce too, for policies that check it on more than scripts; a strict
    ``img-src`` must still list the pixel's host.
    """
    src = f"{pixel_url}?{urlencode({**query, 'noscript': '1'})}"
    return (
        f'<noscript><img height="1" width="1" style="display:none;" alt=""{nonce_attribute(nonce)} '
        f'src="{escape(src)}" /></noscript>'
    )


class TemplateHelpers:
    """Exposed to templates as ``dedupkit``."""

    def head(self, nonce: str | None = None) -> Markup:
        """Pinterest's base code, the queue stub and the deferred snippet, for ``<head>``.

        :param nonce: the response's Content-Security-Policy nonce, written on every script
            (and on the core.js the base code loads). Found by itself when Flask-Talisman or
            ``DEDUPKIT_CSP_NONCE`` provides it.
        """
        state = get_state()
        s = state.settings
        if has_request_context():
            note_head()
        if not state.enabled:
            return Markup("")
        nonce = current_nonce(nonce, s.csp_nonce)
        attribute = nonce_attribute(nonce)
        tag_id = s.tag_id
        pintrk_src = s.pintrk_src
        page_visit = s.page_visit
        consent_cookie = s.consent_cookie

        # Nothing here depends on the visitor: cached pages stay right for everyone (a nonce
        # is the response's, like the policy header that names it: never cache one alone).
        parts: list[str] = []
        if tag_id:
            code = (
                _BASE_CODE.replace("{src}", htmlsafe_json_dumps(pintrk_src))
                .replace("{consented}", _consent_test(consent_cookie, s.require_consent))
                # Under a nonce-based policy without 'strict-dynamic' core.js needs it too.
                .replace("{nonce}", f"t.nonce={htmlsafe_json_dumps(nonce)}," if nonce else "")
            )
            calls = f"pintrk('load',{htmlsafe_json_dumps(str(tag_id))});"
            if not page_visit:
                # With automatic page_visit the snippet fires 'pagevisit' with an event_id;
                # a bare pintrk('page') too would count the visit twice (Woo PR #1178).
                calls += "pintrk('page');"
            parts.append(f"<script{attribute}>{code}{calls}</script>")
            if not s.require_consent:
                # A visitor without JavaScript cannot say yes: the pixel only where none is asked.
                parts.append(_noscript_pixel(s.pixel_url, {"tid": tag_id}, nonce))
        parts.append(f"<script{attribute}>{queue_stub()}</script>")

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
        parts.append(f"<script defer{attribute}{rendered}></script>")
        return Markup("\n".join(parts))

    def pintrk(self, event: Event | None, nonce: str | None = None) -> Markup:
        """Fire the tag for an event the server tracked, with the same event_id.

        Renders nothing when there is no event, no tag name (app-only events), or the
        visitor has not consented: the server did not send it either.

        :param nonce: the response's Content-Security-Policy nonce (see :meth:`head`).
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
        nonce = current_nonce(nonce, state.settings.csp_nonce)
        if has_request_context():
            note_tag_event(event.capi_name)
        # Through the snippet (or its stub) when there: it fires the tag and tells the server
        # whether the call happened. Without it (blocked), a plain tag call.
        script = (
            f"<script{nonce_attribute(nonce)}>{ldp}!function(d,t,x,n){{d&&d.mirror?d.mirror(t,x,n):"
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
        return Markup(script + _noscript_pixel(state.settings.pixel_url, query, nonce))

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


# The CSP nonce


def current_nonce(
    explicit: str | None = None, hook: Callable[[Request], str | None] | None = None
) -> str | None:
    """The nonce to write on this response's scripts, or ``None`` when there is none.

    :param explicit: the template's ``nonce=…``; wins over everything.
    :param hook: ``DEDUPKIT_CSP_NONCE``; asked before the usual places.
    """
    if explicit is not None:
        return _checked(explicit, "the nonce= argument")
    if not has_request_context():
        return None
    if hook is not None:
        try:
            found = hook(request)
        except Exception:
            logger.exception("DEDUPKIT_CSP_NONCE raised; dedupkit's scripts carry no nonce")
            return None
        return None if found is None else _checked(found, "DEDUPKIT_CSP_NONCE")
    found = getattr(request, "csp_nonce", None) or g.get("csp_nonce")
    return _checked(found, "request.csp_nonce") if found else None


def nonce_attribute(nonce: str | None) -> str:
    """`` nonce="…"`` for a tag, or nothing (the nonce is checked to need no escaping)."""
    return f' nonce="{nonce}"' if nonce else ""


def _checked(value: object, where: str) -> str | None:
    if isinstance(value, str) and _NONCE.match(value):
        return value
    # Never written into the page: a value that is no nonce could break out of the attribute.
    logger.warning(
        "%s is no CSP nonce (base64 text expected); dedupkit's scripts carry none", where
    )
    return None


# A forgotten head()


def note_head() -> None:
    """``dedupkit.head()`` was rendered in this request."""
    g.setdefault(_HEAD_KEY, True)


def note_tag_event(name: str) -> None:
    """This request tracked or rendered an event the tag should fire."""
    names: list[str] = g.setdefault(_EVENTS_KEY, [])
    if name not in names and len(names) < _MAX_NAMES:
        names.append(name)


def warn_if_head_missing(response: Response) -> Response:
    """``after_request``: warn when a page meant to fire the tag has no base code."""
    names = g.get(_EVENTS_KEY)
    if not names or g.get(_HEAD_KEY):
        return response
    if (
        response.status_code != 200
        or response.mimetype != "text/html"
        or response.is_streamed
        or response.direct_passthrough  # send_file(): no page of ours, maybe a large file
    ):
        return response
    body = response.get_data()
    if not _HEAD_TAG.search(body):
        return response
    if get_state().settings.pintrk_src.encode() in body:
        return response  # Pinterest's base code pasted by hand: the tag is there
    logger.warning(
        "the page %r fires the Pinterest tag for %s but has no {{ dedupkit.head() }}: no tag "
        "fires and the API alone counts it. Is {{ dedupkit.head() }} in your base template's "
        "<head>?",
        request.path[:200],
        ", ".join(repr(name) for name in names),
    )
    return response
