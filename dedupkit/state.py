"""What dedupkit keeps per Flask app: settings, event names, the outbox and the sender.

One :class:`State` lives in ``app.extensions["dedupkit"]``; the views, the CLI, the ledger and
the templates reach it through :func:`get_state`. It holds no reference to the extension
object, so one :class:`~dedupkit.DedupKit` can serve several apps.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from . import signing
from .delivery.client import CapiClient
from .delivery.sender import BackgroundSender, Sender
from .errors import ConfigurationError, OutboxError
from .event.names import EventNames
from .event.user_data import UserDataHasher
from .outbox import Outbox, open_outbox
from .outbox.fallback import Fallback
from .ratelimit import limiter_for
from .redaction import redacted_url
from .settings import Settings

logger = logging.getLogger("dedupkit")

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "dedupkit"
#: The longest a page waits for the outbox before its event is kept in memory instead.
PUT_TIMEOUT = 0.05
#: The skip reason that counts events dropped because the memory fallback was full.
LOST_REASON = "lost_memory_full"


class Stored(enum.Enum):
    """What :meth:`State.store` did with an event."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    #: The outbox failed: the event waits in memory (see :mod:`dedupkit.outbox.fallback`).
    KEPT_IN_MEMORY = "kept_in_memory"


class State:
    """Everything dedupkit keeps per app (never on the extension object)."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.names = EventNames(settings.advertiser_events)
        self.browser_events = frozenset(self.names.capi_name(n) for n in settings.browser_events)
        self.hasher = UserDataHasher(phone_region=settings.phone_region)
        self.queue_url = settings.outbox_url(app.instance_path)
        self._outbox: Outbox | None = None
        self._outbox_lock = threading.Lock()
        self.fallback = Fallback(
            self._put_patiently,
            spill_path=os.path.join(app.instance_path, "dedupkit-fallback.jsonl"),
            on_lost=self._count_lost,
        )
        self.background = BackgroundSender(self.make_sender, flush_interval=settings.flush_interval)
        #: The per-client limit of the public events endpoint, ``None`` when off.
        self.rate_limiter = limiter_for(settings.rate_limit)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.enabled)

    @property
    def outbox(self) -> Outbox:
        """The outbox, opened on first use (in the process that uses it)."""
        if self._outbox is None:
            with self._outbox_lock:
                if self._outbox is None:
                    self._outbox = open_outbox(
                        self.queue_url, namespace=self.settings.outbox_namespace()
                    )
                    if self.enabled:
                        self.fallback.restore()
        return self._outbox

    def signing_keys(self) -> tuple[bytes, ...]:
        """The keys that sign tickets and visitor tokens, newest last (read on each use: an
        app may set ``SECRET_KEY`` after ``init_app``).

        :raises ConfigurationError: when no key is set.
        """
        return signing.signing_keys(self.app, self.settings)

    def make_client(self, *, test_mode: bool | None = None) -> CapiClient:
        """A Conversions API client with this app's credentials."""
        s = self.settings
        return CapiClient(
            ad_account_id=str(s.ad_account_id or ""),
            token=str(s.conversion_token or ""),
            base_url=s.api_base_url,
            test_mode=s.test_mode if test_mode is None else test_mode,
            timeout=s.http_timeout,
            transport=s.transport,
        )

    def make_sender(self) -> Sender:
        s = self.settings
        return Sender(
            self.outbox,
            self.make_client(),
            retry_window=s.retry_window,
            batch_size=s.batch_size,
            signal_sender=self.app,
        )

    def start_delivery(self) -> None:
        """Start this process's background sender, if the settings want one."""
        if self.enabled and self.settings.background_sender:
            self.background.ensure_started()

    def store(self, payload: Mapping[str, Any]) -> Stored:
        """Queue one CAPI event without ever holding the page for long.

        The outbox gets :data:`PUT_TIMEOUT`; if it fails or is locked the event waits in
        memory and is written by the fallback's own thread as soon as the outbox works.
        """
        try:
            queued = self.outbox.put(payload, timeout=PUT_TIMEOUT)
        except OutboxError as exc:
            logger.warning(
                "could not write to the dedupkit outbox %s (%s); keeping the event in memory",
                redacted_url(self.queue_url),
                exc,
            )
            self.fallback.keep(payload)
            return Stored.KEPT_IN_MEMORY
        if queued:
            self._deliver_soon()
        return Stored.QUEUED if queued else Stored.DUPLICATE

    def store_in(self, transaction: Any, payload: Mapping[str, Any]) -> Stored:
        """Queue one CAPI event in the caller's database transaction (``kit.track(...,
        session=db.session)``): it commits with the order or vanishes with it, and the
        sender is woken once it has committed. No fallback: a failure is the caller's.

        :raises ConfigurationError: the outbox is not in a database (not PostgreSQL), or not
            in the one ``transaction`` uses.
        :raises OutboxError: the database refused the write (the transaction has failed).
        """
        put_in = getattr(self.outbox, "put_in", None)
        if put_in is None:
            raise ConfigurationError(
                "kit.track(session=…) writes the event in your database transaction, which "
                "needs the outbox in that PostgreSQL database: set DEDUPKIT_QUEUE_URL="
                "postgresql+psycopg://… (the outbox is "
                f"{redacted_url(self.queue_url)}), or call track() without session="
            )
        queued: bool = put_in(transaction, payload, after_commit=self._deliver_soon)
        return Stored.QUEUED if queued else Stored.DUPLICATE

    def _deliver_soon(self) -> None:
        # Waking a sender that does not run (none wanted, or not started) does nothing.
        self.start_delivery()
        self.background.wake()

    def record_skip(
        self, reason: str, *, event_name: str | None = None, event_id: str | None = None
    ) -> None:
        """Count an event deliberately not sent (and keep it for the ledger's "tag only"
        verdict); a failing outbox only loses the count."""
        try:
            self.outbox.record_skip(reason, event_name=event_name, event_id=event_id)
        except OutboxError:
            logger.warning("could not count a skipped event (%s)", reason)

    def _put_patiently(self, payload: Mapping[str, Any]) -> bool:
        # The fallback's thread may wait for a lock: no page is waiting on it.
        queued = self.outbox.put(payload)
        if queued:
            self._deliver_soon()
        return queued

    def _count_lost(self, count: int) -> None:
        for _ in range(count):
            self.outbox.record_skip(LOST_REASON)


def get_state(app: Flask | None = None) -> State:
    """The per-app state. :raises RuntimeError: when dedupkit is not registered."""
    app = app or current_app
    try:
        state: State = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "dedupkit is not registered on this app. Did you forget to call 'init_app'?"
        ) from None
    return state
