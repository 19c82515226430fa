"""The caller's transaction, for ``kit.track(..., session=…)``: its connection, and a call
once it has committed (never after a rollback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

logger = logging.getLogger("dedupkit")

#: What ``session=`` takes.
Transaction = Session | scoped_session[Any] | Connection


def connection_of(transaction: Transaction) -> Connection:
    """The connection of a session's transaction (begun if none is), or the connection.

    :raises TypeError: for anything else.
    """
    if isinstance(transaction, scoped_session):
        transaction = transaction()
    if isinstance(transaction, Session):
        return transaction.connection()
    if isinstance(transaction, Connection):
        return transaction
    raise TypeError(
        "session= takes a SQLAlchemy Session (Flask-SQLAlchemy's db.session) or Connection, "
        f"not {type(transaction).__name__}"
    )


#: ``Session.info`` key of the callbacks waiting for the session's commit.
_AFTER_COMMIT = "dedupkit_after_commit"


def call_after_commit(transaction: Transaction, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the session's current transaction commits; a rollback forgets
    it. A bare ``Connection`` has no such event: nothing is called."""
    if isinstance(transaction, scoped_session):
        transaction = transaction()
    if not isinstance(transaction, Session):
        return
    waiting: list[Callable[[], None]] | None = transaction.info.get(_AFTER_COMMIT)
    if waiting is None:
        waiting = transaction.info[_AFTER_COMMIT] = []
        # On this session only, for its lifetime (Flask-SQLAlchemy makes one per request).
        sa.event.listen(transaction, "after_commit", _run_after_commit)
        sa.event.listen(transaction, "after_rollback", _forget_after_commit)
    if callback not in waiting:
        waiting.append(callback)


def _run_after_commit(session: Session) -> None:
    waiting: list[Callable[[], None]] = session.info.get(_AFTER_COMMIT, [])
    callbacks, waiting[:] = list(waiting), []
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a wake-up must never fail the shop's commit
            logger.exception("dedupkit: a callback after the session's commit failed")


def _forget_after_commit(session: Session) -> None:
    session.info.get(_AFTER_COMMIT, []).clear()
