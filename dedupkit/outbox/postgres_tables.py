"""The PostgreSQL outbox's tables, all named ``dedupkit_*``, in one :data:`metadata`.

An app whose schema Alembic manages adds :data:`metadata` to its ``target_metadata``;
otherwise :class:`~dedupkit.outbox.postgres.PostgresOutbox` creates the tables on first use.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

#: The version of these tables; an outbox written by a newer dedupkit is refused.
SCHEMA_VERSION = 1

#: The dedupkit tables, for ``create_all`` and Alembic's ``target_metadata``.
metadata = sa.MetaData()

#: One row per event. ``due_at`` is when a pending entry may be sent, or when the lease of an
#: in-flight one ends; ``changed_at`` is when it was stored, rescheduled, delivered, killed
#: or replayed (not claimed); ``claims`` counts claims, to tell a stale claim from the
#: current one; ``fields``/``value``/``currency`` are the coverage summary (see
#: :func:`~dedupkit.outbox.base.summary_of`).
outbox_table = sa.Table(
    "dedupkit_outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    #: The ad account of the process that stored it (``NULL``: a tool without one).
    sa.Column("account", sa.Text),
    sa.Column("event_name", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("due_at", sa.Double, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("changed_at", sa.Double, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("event_time", sa.Double),
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
    sa.Column("fields", sa.Text),
    sa.Column("value", sa.Double),
    sa.Column("currency", sa.Text),
    sa.Column("test", sa.Boolean),
    #: The visitor's device label, from the ack (for the ledger's "where the tag is lost").
    sa.Column("device", sa.Text),
    sa.UniqueConstraint("namespace", "event_name", "event_id", name="dedupkit_outbox_event"),
    sa.Index("dedupkit_outbox_due", "namespace", "status", "due_at"),
    sa.Index("dedupkit_outbox_changed", "namespace", "changed_at"),
    sa.Index("dedupkit_outbox_created", "namespace", "created_at"),
)
#: Tag evidence: did the browser make the tag call for an event.
evidence_table = sa.Table(
    "dedupkit_evidence",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("event_name", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("tag", sa.Boolean, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.UniqueConstraint("namespace", "event_name", "event_id", name="dedupkit_evidence_event"),
    sa.Index("dedupkit_evidence_order", "namespace", "id"),
)
#: The last skipped events with a name and id.
skips_table = sa.Table(
    "dedupkit_skips",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("event_name", sa.Text),
    sa.Column("event_id", sa.Text),
    sa.Index("dedupkit_skips_order", "namespace", "id"),
)
#: Counters that only go up (the outcome totals, skips by reason, the lag histogram), per
#: namespace.
counters_table = sa.Table(
    "dedupkit_counters",
    metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Double, nullable=False),
)
#: Per namespace: the ad account it belongs to, the pause shared by every sender, the recent
#: errors.
namespaces_table = sa.Table(
    "dedupkit_namespaces",
    metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("account", sa.Text),
    sa.Column("pause_until", sa.Double),
    sa.Column("pause_reason", sa.Text),
    sa.Column("pause_kind", sa.Text),
    sa.Column("pause_token_id", sa.Text),
    sa.Column("last_errors", sa.Text),
)
#: ``schema_version``: what wrote these tables.
meta_table = sa.Table(
    "dedupkit_meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class Status(enum.IntEnum):
    """The ``status`` column of ``dedupkit_outbox``."""

    PENDING = 0
    IN_FLIGHT = 1
    DELIVERED = 2
    DEAD = 3
