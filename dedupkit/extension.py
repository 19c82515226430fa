"""The Flask extension's face: :class:`DedupKit`, ``init_app`` and :meth:`DedupKit.track`."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, has_request_context, request

from . import logs
from . import settings as settings_module
from .cli import cli
from .event.model import Event
from .event.page_url import clean_page_url
from .intake import tickets, visitor_token
from .intake.record import Submission, current_visitor, record, remember_click_id, start_delivery
from .state import EXTENSION_KEY, State, get_state
from .web.blueprint import blueprint, events
from .web.templating import TemplateHelpers, note_tag_event, warn_if_head_missing


class DedupKit:
    """Sends each Pinterest conversion on both channels with one ``event_id``.

    ::

        kit = DedupKit(app)          # or kit = DedupKit(); kit.init_app(app)

    Settings come from ``app.config`` (``DEDUPKIT_*``, see ``docs/configuration.md``,
    generated from :class:`dedupkit.settings.Settings`), then the environment. Keyword
    arguments override both, by field name:
    ``DedupKit(app, test_mode=True, transport=httpx.MockTransport(...))``.
    """

    def __init__(self, app: Flask | None = None, **overrides: Any) -> None:
        self._overrides = overrides
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **overrides: Any) -> None:
        """Register dedupkit on ``app``; ``overrides`` beat the constructor's.

        :raises RuntimeError: if dedupkit is already registered on ``app``.
        :raises ConfigurationError: for a setting that is unknown, malformed or missing,
            naming the fix.
        """
        # Problems must reach the console even when the app set up no logging.
        logs.install()
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'DedupKit' instance is already registered on this app; create it once "
                "and call init_app once per app."
            )
        settings = settings_module.load(app.config, overrides={**self._overrides, **overrides})
        state = State(app, settings)
        if state.enabled:
            state.check_outbox()
        app.extensions[EXTENSION_KEY] = state
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.jinja_env.globals["dedupkit"] = TemplateHelpers()
        app.before_request(start_delivery)
        app.after_request(remember_click_id)
        app.after_request(warn_if_head_missing)
        _exempt_from_csrf(app)
        app.cli.add_command(cli)

    def track(
        self,
        name: str,
        *,
        event_id: str | None = None,
        event_time: int | float | None = None,
        event_source_url: str | None = None,
        user: Mapping[str, Any] | None = None,
        visitor: str | None = None,
        session: Any = None,
        **event_data: Any,
    ) -> Event:
        """Record a conversion for the Conversions API and return it for the tag.

        Inside a request the visitor's IP, user agent, click id and consent come from the
        request; outside one, pass them in ``user`` (``client_ip_address``,
        ``client_user_agent``, ``click_id``). ``event_data`` uses the tag's vocabulary.
        Tracking the same (name, event_id) twice sends one event. Returns at once: delivery
        happens in the background and its problems never raise here.

        When the outbox fails the event waits in memory. Only if that is full too, and no
        page waits on the call (outside a request, or with ``visitor=`` from a webhook),
        :class:`~dedupkit.errors.OutboxError` says the event could be neither stored nor
        kept: answer with a 5xx so that the payment provider retries. A page's own call
        never raises it.

        ``visitor``, a :meth:`visitor_token` captured in the shopper's request, makes the
        event the shopper's: their click id, IP, user agent, consent and page, and none of
        the current request's. It is meant for webhooks, which are requests too, but from
        the payment provider; so it is accepted inside a request, and replaces its visitor.

        ``session``, a SQLAlchemy ``Session`` (Flask-SQLAlchemy's ``db.session`` as is) or
        ``Connection`` on the PostgreSQL database ``DEDUPKIT_QUEUE_URL`` names, writes the
        event in that transaction: it is sent only if the transaction commits (the order
        and its conversion commit together), and the sender is woken after the commit.

        :raises OutboxError: see above.
        :raises InvalidEvent: for an unknown event name or malformed data, naming it; also
            (:class:`~dedupkit.intake.visitor_token.InvalidVisitorToken`) for a visitor token that
            is altered, truncated, signed with another key or expired.
        :raises ConfigurationError: with ``session`` when the outbox is not in that
            session's PostgreSQL database.
        :raises OutboxError: with ``session`` when the database refused the write (the
            transaction has failed too: roll it back).
        """
        state = get_state()
        in_request = has_request_context()
        shopper = None
        if visitor is not None:
            keys = state.signing_keys()
            shopper = visitor_token.restore(keys, visitor)
            if event_source_url is None:
                event_source_url = shopper.page_url
        elif in_request and event_source_url is None:
            event_source_url = request.url
        submission = Submission(
            name,
            event_data,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
            user=user or {},
            # No page waits on a webhook's or a worker's event: they are told when it is lost.
            must_store=not in_request or visitor is not None,
        )
        if shopper is None and in_request:
            shopper = current_visitor(state)
        event = record(state, submission, shopper, transaction=session).event
        if in_request and visitor is None and event.tag_name is not None:
            note_tag_event(event.capi_name)
        return event

    def ticket(
        self,
        name: str,
        *,
        order_id: str | int,
        value: Any = None,
        currency: str | None = None,
        event_id: str | None = None,
        expires_in: float = tickets.DEFAULT_EXPIRES_IN,
    ) -> str:
        """A signed ticket that lets the browser report this one event (a SPA's checkout).

        The page passes it on: ``dedupkit.track('checkout', data, {ticket: t})``; the ticket
        shows its event_id (``"<event_id>~<signed claims>"``), which the snippet gives both
        channels. ``POST {prefix}/events`` then accepts the event, once, if its name,
        event_id, value, currency and order id are the signed ones and it has not expired.

        :param event_id: default ``"<capi name>-<order id>"``, the id :meth:`track` gives it.
        :raises ConfigurationError: when no signing key is set (``DEDUPKIT_SECRET_KEY`` or
            ``SECRET_KEY``).
        :raises InvalidEvent: for an unknown name or a malformed value, currency or order id.
        """
        state = get_state()
        return tickets.mint(
            state.signing_keys(),
            state.names,
            name,
            order_id=order_id,
            value=value,
            currency=currency,
            event_id=event_id,
            expires_in=expires_in,
        )

    def visitor_token(self) -> str:
        """The current visitor, signed, for a conversion confirmed later out of band.

        Keep it with the order or pass it as payment metadata (at most 500 URL-safe
        characters, within Stripe's metadata limit); the webhook then calls
        ``kit.track("checkout", order_id=…, value=…, visitor=token)``. Valid 7 days.

        :raises RuntimeError: outside a request: there is no visitor to capture.
        :raises ConfigurationError: when no signing key is set.
        """
        if not has_request_context():
            raise RuntimeError("kit.visitor_token() captures the visitor of the current request")
        state = get_state()
        keys = state.signing_keys()
        return visitor_token.capture(keys, current_visitor(state), clean_page_url(request.url))


#: Flask-WTF's ``CSRFProtect`` instances that exempt the events endpoint already.
_csrf_exempting: weakref.WeakSet[Any] = weakref.WeakSet()


def _exempt_from_csrf(app: Flask) -> None:
    """Exempt ``POST {prefix}/events``, and only it, from Flask-WTF's ``CSRFProtect``.

    The beacons carry no form token, so each would get a 400, silently (``sendBeacon`` never
    reads the answer). The endpoint needs none: it acts for nobody, and has its own defences
    (the origin check, signed tickets for conversions, a rate limit per IP). Whichever
    extension came first: exempted at once when ``CSRFProtect`` is registered, else at the
    first request, before its check (``before_request`` functions run in the order added).
    """

    def exempt(app: Flask) -> None:
        csrf = app.extensions.get("csrf")
        if csrf is None or csrf in _csrf_exempting or not hasattr(csrf, "exempt"):
            return
        csrf.exempt(events)
        _csrf_exempting.add(csrf)  # one instance may serve many apps: once is enough

    exempt(app)
    app.before_request(lambda: exempt(current_app))


__all__ = ["DedupKit"]
