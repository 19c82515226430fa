"""The Flask extension: configuration, per-app state and :meth:`DedupKit.track`."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request

from . import config as cfg
from .bots import is_bot
from .client import CapiClient
from .errors import OutboxError
from .event import Event, build_event
from .event_names import EventNames
from .outbox import Outbox, open_outbox
from .sender import BackgroundSender, Sender
from .user_data import UserDataHasher, has_required_identity, sha256_hex
from .visitor import Visitor, read_visitor

logger = logging.getLogger("dedupkit")

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "dedupkit"
#: Events kept in memory while the outbox cannot be written, retried on the next enqueue.
MAX_SPILLED = 10_000
#: One year, the lifetime Pinterest's partners give the click id cookie.
COOKIE_MAX_AGE = 365 * 24 * 3600


class DedupKit:
    """Sends each Pinterest conversion on both channels with one ``event_id``.

    ::

        kit = DedupKit(app)          # or kit = DedupKit(); kit.init_app(app)

    Settings, all in ``app.config`` (see :data:`dedupkit.config.DEFAULTS`):
    ``DEDUPKIT_AD_ACCOUNT_ID``, ``DEDUPKIT_CONVERSION_TOKEN``, ``DEDUPKIT_TAG_ID`` (also read
    from the environment), ``DEDUPKIT_ENABLED``, ``DEDUPKIT_API_BASE_URL``,
    ``DEDUPKIT_TEST_MODE``, ``DEDUPKIT_PINTRK_SRC``, ``DEDUPKIT_QUEUE_URL``,
    ``DEDUPKIT_URL_PREFIX``, ``DEDUPKIT_CLIENT_IP_HEADER``, ``DEDUPKIT_REQUIRE_CONSENT``,
    ``DEDUPKIT_BROWSER_EVENTS``, ``DEDUPKIT_DEBUG_UI`` (a flag, or a callable
    ``(request) -> bool`` that guards the ledger page), ``DEDUPKIT_RETRY_WINDOW`` and the
    extras documented in the README.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register dedupkit on ``app``.

        :raises RuntimeError: if dedupkit is already registered on ``app``.
        :raises ConfigurationError: if credentials are missing while enabled.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'DedupKit' instance is already registered on this app; create it once "
                "and call init_app once per app."
            )
        cfg.apply_defaults(app.config)
        app.extensions[EXTENSION_KEY] = _State(self, app)

        from .blueprint import blueprint
        from .cli import cli
        from .templating import TemplateHelpers

        app.register_blueprint(blueprint, url_prefix=cfg.setting(app.config, "URL_PREFIX"))
        app.jinja_env.globals["dedupkit"] = TemplateHelpers()
        app.before_request(_start_sender)
        app.after_request(_remember_click_id)
        app.cli.add_command(cli)

    def track(
        self,
        name: str,
        *,
        event_id: str | None = None,
        event_time: int | float | None = None,
        event_source_url: str | None = None,
        user: Mapping[str, Any] | None = None,
        **event_data: Any,
    ) -> Event:
        """Record a conversion for the Conversions API and return it for the tag.

        Inside a request the visitor's IP, user agent, click id and consent come from the
        request; outside one, pass them in ``user`` (``client_ip_address``,
        ``client_user_agent``, ``click_id``). ``event_data`` uses the tag's vocabulary.
        Tracking the same (name, event_id) twice sends one event. Returns at once: delivery
        happens in the background and its problems never raise here.

        :raises InvalidEvent: for an unknown event name or malformed data, naming it.
        """
        state = get_state()
        visitor = current_visitor() if has_request_context() else None
        merged_user = dict(visitor_user_data(visitor, state.hash_pin_unauth)) if visitor else {}
        merged_user.update(user or {})
        if visitor and event_source_url is None:
            event_source_url = request.url
        event = state.build(
            name,
            event_id=event_id,
            event_time=event_time,
            event_source_url=event_source_url,
            user=merged_user,
            data=event_data,
            # In a request a missing IP or user agent marks a non-browser: skipped, not raised.
            require_identity=visitor is None,
        )
        state.submit(event, visitor)
        return event


class _State:
    """Everything dedupkit keeps per app (never on the extension object)."""

    def __init__(self, kit: DedupKit, app: Flask) -> None:
        conf = app.config
        self.kit = kit
        self.app = app
        self.enabled = bool(cfg.setting(conf, "ENABLED"))
        if self.enabled:
            cfg.require(conf, "AD_ACCOUNT_ID", "CONVERSION_TOKEN")
        self.names = EventNames(
            cfg.names_list(cfg.setting(conf, "ADVERTISER_EVENTS"), "ADVERTISER_EVENTS")
        )
        self.browser_events = frozenset(
            self.names.capi_name(n)
            for n in cfg.names_list(cfg.setting(conf, "BROWSER_EVENTS"), "BROWSER_EVENTS")
        )
        for cookie in ("CLICK_ID_COOKIE", "CONSENT_COOKIE"):
            cfg.cookie_name(conf, cookie)
        self.hasher = UserDataHasher(phone_region=cfg.setting(conf, "PHONE_REGION"))
        self.require_consent = bool(cfg.setting(conf, "REQUIRE_CONSENT"))
        self.hash_pin_unauth = bool(cfg.setting(conf, "HASH_PIN_UNAUTH"))
        self.partner_name = cfg.setting(conf, "PARTNER_NAME")
        self.queue_url = cfg.setting(conf, "QUEUE_URL") or (
            f"sqlite:///{app.instance_path}/dedupkit.sqlite3"
        )
        self._outbox: Outbox | None = None
        self._outbox_lock = threading.Lock()
        self._spilled: deque[dict[str, Any]] = deque(maxlen=MAX_SPILLED)
        self._spill_lock = threading.Lock()
        self.background = BackgroundSender(
            self.make_sender, flush_interval=float(cfg.setting(conf, "FLUSH_INTERVAL"))
        )

    @property
    def config(self) -> Mapping[str, Any]:
        return self.app.config

    @property
    def outbox(self) -> Outbox:
        """The outbox, opened on first use (in the process that uses it)."""
        if self._outbox is None:
            with self._outbox_lock:
                if self._outbox is None:
                    self._outbox = open_outbox(self.queue_url)
        return self._outbox

    def make_client(self, *, test_mode: bool | None = None) -> CapiClient:
        conf = self.config
        cfg.require(conf, "AD_ACCOUNT_ID", "CONVERSION_TOKEN")
        return CapiClient(
            ad_account_id=str(cfg.setting(conf, "AD_ACCOUNT_ID")),
            token=str(cfg.setting(conf, "CONVERSION_TOKEN")),
            base_url=str(cfg.setting(conf, "API_BASE_URL")),
            test_mode=bool(cfg.setting(conf, "TEST_MODE")) if test_mode is None else test_mode,
            timeout=float(cfg.setting(conf, "HTTP_TIMEOUT")),
        )

    def make_sender(self) -> Sender:
        conf = self.config
        return Sender(
            self.outbox,
            self.make_client(),
            retry_window=float(cfg.setting(conf, "RETRY_WINDOW")),
            send_expired_as_offline=bool(cfg.setting(conf, "SEND_LATE_AS_OFFLINE")),
            batch_size=int(cfg.setting(conf, "BATCH_SIZE")),
            signal_sender=self.app,
        )

    def build(self, name: str, **kwargs: Any) -> Event:
        return build_event(
            name, names=self.names, hasher=self.hasher, partner_name=self.partner_name, **kwargs
        )

    def submit(self, event: Event, visitor: Visitor | None) -> str:
        """Queue ``event`` unless it must not be sent; returns what happened to it."""
        if not self.enabled:
            return "disabled"
        skip = self.skip_reason(visitor)
        if not skip and self._identity_missing(event):
            skip = "no_identity"
        if skip:
            self._record_skip(skip)
            return f"skipped: {skip}"
        return "queued" if self.enqueue(event.to_capi()) else "duplicate"

    def skip_reason(self, visitor: Visitor | None) -> str | None:
        if visitor is None:
            return None
        if not visitor.may_send(self.require_consent):
            return "no_consent"
        if is_bot(visitor.user_agent):
            return "bot"
        return None

    def _identity_missing(self, event: Event) -> bool:
        if has_required_identity(event.user_data):
            return False
        logger.warning(
            "not sending %s %s: no email, mobile ad id, or client IP and user agent",
            event.capi_name,
            event.event_id,
        )
        return True

    def enqueue(self, payload: dict[str, Any]) -> bool:
        """Store ``payload``; if the outbox fails, keep it in memory and say so loudly."""
        try:
            if self._spilled:
                self._write_spilled()
            queued = self.outbox.put(payload)
        except OutboxError:
            logger.exception(
                "could not write to the dedupkit outbox %s; keeping the event in memory "
                "(%d waiting) until it can be written",
                cfg.redacted_url(self.queue_url),
                len(self._spilled) + 1,
            )
            self._spilled.append(payload)
            return True
        if queued and cfg.setting(self.config, "BACKGROUND_SENDER"):
            self.background.ensure_started()
            self.background.wake()
        return queued

    def _write_spilled(self) -> None:
        # One thread at a time: two draining together would put one event twice and drop
        # the next one from the deque without writing it.
        with self._spill_lock:
            while self._spilled:
                self.outbox.put(self._spilled[0])
                self._spilled.popleft()
        logger.info("the dedupkit outbox works again; events kept in memory were written")

    def _record_skip(self, reason: str) -> None:
        try:
            self.outbox.record_skip(reason)
        except OutboxError:
            logger.warning("could not count a skipped event (%s)", reason)


def get_state(app: Flask | None = None) -> _State:
    """The per-app state. :raises RuntimeError: when dedupkit is not registered."""
    app = app or current_app
    try:
        state: _State = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "dedupkit is not registered on this app. Did you forget to call 'init_app'?"
        ) from None
    return state


def current_visitor(page_url: str | None = None) -> Visitor:
    """The visitor of the current request, read once per request (and page URL)."""
    cache: dict[str | None, Visitor] = g.setdefault("_dedupkit_visitors", {})
    if page_url not in cache:
        conf = get_state().config
        cache[page_url] = read_visitor(
            request,
            ip_header=cfg.setting(conf, "CLIENT_IP_HEADER"),
            click_cookie=cfg.setting(conf, "CLICK_ID_COOKIE"),
            consent_cookie=cfg.setting(conf, "CONSENT_COOKIE"),
            page_url=page_url,
        )
    return cache[page_url]


def visitor_user_data(visitor: Visitor, hash_pin_unauth: bool) -> dict[str, Any]:
    """The clear user-data fields a request provides."""
    data: dict[str, Any] = {
        "client_ip_address": visitor.ip,
        "client_user_agent": visitor.user_agent,
        "click_id": visitor.click_id,
    }
    if hash_pin_unauth and visitor.pin_unauth:
        # Pinterest's own Magento and Salesforce plugins send sha256(_pin_unauth) as
        # external_id: it ties server events to the tag's anonymous visitor.
        data["external_id"] = sha256_hex(visitor.pin_unauth)
    return {k: v for k, v in data.items() if v}


def set_click_id_cookie(response: Response, click_id: str) -> None:
    """Write the click id as a server cookie, which ITP does not cap like a JS cookie."""
    conf = get_state().config
    response.set_cookie(
        cfg.setting(conf, "CLICK_ID_COOKIE"),
        click_id,
        max_age=COOKIE_MAX_AGE,
        path="/",
        domain=cfg.setting(conf, "COOKIE_DOMAIN"),
        secure=request.is_secure,
        httponly=False,  # Pinterest's tag reads it
        samesite="Lax",
    )


def _start_sender() -> None:
    # On any request, not only the first tracked event: after a restart, events a crashed
    # process left in the outbox must go out even if no new event comes in.
    state = get_state()
    if state.enabled and cfg.setting(state.config, "BACKGROUND_SENDER"):
        state.background.ensure_started()


def _remember_click_id(response: Response) -> Response:
    if "epik" in request.args:
        visitor = current_visitor()
        if visitor.click_id and visitor.click_id_from_url:
            set_click_id_cookie(response, visitor.click_id)
    return response


__all__ = ["DedupKit", "get_state"]
