"""The Jinja global ``dedupkit``: ``{{ dedupkit.head() }}`` and ``{{ dedupkit.pintrk(event) }}``.

Everything goes through :func:`markupsafe.escape` or :func:`jinja2.utils.htmlsafe_json_dumps`,
so no event value can close the ``<script>`` it is written into.
"""

from __future__ import annotations

from functools import lru_cache

from flask import has_request_context, url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from .assets import snippet, static_file
from .event import Event
from .intake import current_visitor
from .state import get_state

# Pinterest's base code (pinterest.md §8.1), with the core.js injection behind a consent test
# run in the browser: the HTML is then the same for every visitor, so a full-page cache cannot
# serve one visitor's "yes" to another. dedupkit.js reads the same cookie and injects core.js
# (data-pintrk-src) only when this code held it back and the visitor later says yes.
_BASE_CODE = (
    "!function(e,c){if(!window.pintrk){window.pintrk=function(){window.pintrk.queue.push("
    'Array.prototype.slice.call(arguments))};var n=window.pintrk;n.queue=[],n.version="3.0";'
    'if(c){var t=document.createElement("script");t.async=!0,t.src=e;'
    'var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r)}}}'
    "({src},{consented});"
)


def _consent_test(cookie: str, required: bool) -> str:
    """JavaScript that is true when the tag may load: a stored yes, or no stored no."""
    # Cookie names are checked against settings.COOKIE_NAME at start-up: regex- and script-safe.
    if required:
        return f"/(^|; ){cookie}=1(;|$)/.test(document.cookie)"
    return f"!/(^|; ){cookie}=0(;|$)/.test(document.cookie)"


@lru_cache(maxsize=1)
def queue_stub() -> str:
    """The inline stub that queues ``dedupkit.track`` calls made before the snippet loads."""
    return static_file("dedupkit-stub.js").decode("utf-8").strip()


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
        if has_request_context() and not current_visitor(state).may_send(
            state.settings.require_consent
        ):
            return Markup("")
        name = htmlsafe_json_dumps(event.tag_name)
        data = htmlsafe_json_dumps(event.to_pintrk())
        return Markup(f"<script>window.pintrk&&window.pintrk('track',{name},{data});</script>")
