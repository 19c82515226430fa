"""What dedupkit keeps per Flask app: settings, event names, the outbox and the sender.

One :class:`State` lives in ``app.extensions["dedupkit"]``; the views, the CLI, the ledger and
the templates reach it through :func:`get_state`. It holds no reference to the extension
object, so one :class:`~dedupkit.DedupKit` can serve several apps.
"""

from __future__ import annotations

import enum
import logging
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
from .outbox.base import NewerOutbox
from .outbox.fallback import Fallback, spill_on_sigterm
from .outbox.fallback_records import (
    Record,
    event_record,
    evidence_record,
    skip_record,
    write_record,
)
from .ratelimit import limiter_for
from .redaction import redacted_url
from .settings import Settings
from .vocabulary import SkipReason

logger = logging.getLogger("dedupkit")

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "dedupkit"
#: The longest a page waits for the outbox before its event is kept in memory instead.
PUT_TIMEOUT = 0.05
#: The skip reason that counts events dropped because the memory fallback was full.
LOST_REASON = SkipReason.LOST_MEMORY_FULL


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
        account = f"-{self.account}" if self.account else ""
        self.fallback = Fallback(
            self._write_patiently,
            spill_dir=app.instance_path,
            spill_name=f"dedupkit-fallback{account}",
            on_lost=self._count_lost,
        )
        if self.enabled:
            spill_on_sigterm()
        self.background = BackgroundSender(self.make_sender, flush_interval=settings.flush_interval)
        #: The per-client limit of the public events endpoint, ``None`` when off.
        self.rate_limiter = limiter_for(settings.rate_limit)

    @property
    def account(self) -> str | None:
        """The ad account the outbox is bound to, ``None`` when none is configured."""
        return str(self.settings.ad_account_id) if self.settings.ad_account_id else None

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
                        self.queue_url,
                        namespace=self.settings.outbox_namespace(),
                        account=self.account,
                    )
                    if self.enabled:
                        self.fallback.restore()
        return self._outbox

    def check_outbox(self) -> None:
        """At start-up: open the outbox once, so that one bound to another ad account, or
        written by a newer dedupkit, stops the app with a message naming the fix. An outbox
        that merely fails now (Redis down, disk full) is logged: events wait in memory.

        :raises ConfigurationError: naming both accounts and the setting, or the version.
        """
        probe = open_outbox(
            self.queue_url, namespace=self.settings.outbox_namespace(), account=self.account
        )
        try:
            probe.recent_skips(1)
        except NewerOutbox as exc:
            raise ConfigurationError(str(exc)) from None
        except OutboxError as exc:
            logger.warning(
                "the dedupkit outbox %s cannot be used now (%s); events wait in memory until it "
                "can",
                redacted_url(self.queue_url),
                exc,
            )
        finally:
            probe.close()

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
            max_retry_after=s.max_retry_after,
        )

    def start_delivery(self) -> None:
        """Start this process's background sender, if the settings want one."""
        if self.enabled and self.settings.background_sender:
            self.background.ensure_started()

    def store(
        self, payload: Mapping[str, Any], *, tag: bool | None = None, must_keep: bool = False
    ) -> Stored:
        """Queue one CAPI event (with a beacon's tag flag) in one write, without ever holding
        the page for long.

        The outbox gets :data:`PUT_TIMEOUT`; if it fails or is locked the event waits in
        memory and is written by the fallback's own thread as soon as the outbox works.

        :param must_keep: no page is waiting (a webhook, a worker): when the memory is full
            too, raise rather than drop the oldest event held.
        :raises OutboxError: with ``must_keep``, when the event could be neither stored nor
            kept.
        """
        record = event_record(payload, tag)
        queued = self._write_now(record, must_keep)
        if queued is None:
            return Stored.KEPT_IN_MEMORY
        if queued:
            self._deliver_soon()
        return Stored.QUEUED if queued else Stored.DUPLICATE

    def store_in(
        self, transaction: Any, payload: Mapping[str, Any], *, tag: bool | None = None
    ) -> Stored:
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
        queued: bool = put_in(transaction, payload, tag=tag, after_commit=self._deliver_soon)
        return Stored.QUEUED if queued else Stored.DUPLICATE

    def _write_now(self, record: Record, must_keep: bool) -> bool | None:
        """Write ``record`` within :data:`PUT_TIMEOUT`, or keep it in memory (``None``)."""
        try:
            return write_record(self.outbox, record, timeout=PUT_TIMEOUT)
        except OutboxError as exc:
            logger.warning(
                "could not write to the dedupkit outbox %s (%s); keeping the record in memory",
                redacted_url(self.queue_url),
                exc,
            )
            if not must_keep:
                self.fallback.keep(record)
            elif not self.fallback.try_keep(record):
                raise OutboxError(
                    f"dedupkit could neither store this event ({exc}) nor keep it: "
                    f"{self.fallback.cap} records already wait in memory for the outbox. "
                    "Answer with an error so that the caller retries"
                ) from exc
            return None

    def _deliver_soon(self) -> None:
        # Waking a sender that does not run (none wanted, or not started) does nothing.
        self.start_delivery()
        self.background.wake()

    def record_skip(
        self,
        reason: SkipReason,
        *,
        event_name: str | None = None,
        event_id: str | None = None,
        tag: bool | None = None,
    ) -> None:
        """Count an event deliberately not sent (and keep it for the ledger's "tag only"
        verdict) with a beacon's tag flag, in one write bounded like :meth:`store`'s and
        kept in memory as events are when the outbox fails."""
        self._write_now(skip_record(reason.value, event_name, event_id, tag), False)

    def record_tag(self, event_name: str, event_id: str, fired: bool) -> None:
        """Store tag evidence in one write bounded like :meth:`store`'s, kept in memory as
        events are when the outbox fails."""
        self._write_now(evidence_record(event_name, event_id, fired), False)

    def _write_patiently(self, record: Record) -> bool:
        # The fallback's thread may wait for a lock: no page is waiting on it.
        queued = write_record(self.outbox, record)
        if queued:
            self._deliver_soon()
        return queued

    def _count_lost(self, reason: SkipReason, count: int) -> None:
        self.outbox.record_skip(reason.value, count=count)


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
