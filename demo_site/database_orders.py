"""The demo's orders in PostgreSQL, in the database that holds dedupkit's outbox.

An order is inserted and its conversion tracked in one transaction
(``kit.track(..., session=transaction)``): if anything fails before the commit, neither the
order nor its conversion exists; once it commits, both do, even if the process dies the next
instant. Needs ``pip install 'flask-dedupkit[postgres]'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import CATALOGUE, FIRST_ORDER_NUMBER, Line, Order, Orders

metadata = sa.MetaData()
orders_table = sa.Table(
    "demo_orders",
    metadata,
    sa.Column("number", sa.BigInteger, sa.Identity(start=FIRST_ORDER_NUMBER), primary_key=True),
    sa.Column("lines", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("zip", sa.Text, nullable=False),
    sa.Column("visitor_token", sa.Text),
    sa.Column("paid", sa.Boolean, nullable=False, server_default=sa.false()),
)


class DatabaseOrders(Orders):
    """Orders in the ``demo_orders`` table, numbered by the database (``A-1001``, …)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        parsed = sa.engine.make_url(url).set(drivername="postgresql+psycopg")
        self.engine = sa.create_engine(parsed)
        metadata.create_all(self.engine)

    @contextmanager
    def placing(
        self, lines: tuple[Line, ...], visitor_token: str | None = None, **customer: str
    ) -> Iterator[tuple[Order, Connection]]:
        """Insert an order; the block runs in its transaction, committed after it."""
        stored = json.dumps([[line.product.sku, line.quantity] for line in lines])
        with self.engine.begin() as conn:
            number = conn.execute(
                orders_table.insert()
                .values(lines=stored, visitor_token=visitor_token, **customer)
                .returning(orders_table.c.number)
            ).scalar_one()
            yield Order(f"A-{number}", lines, visitor_token=visitor_token, **customer), conn

    def place(
        self, lines: tuple[Line, ...], visitor_token: str | None = None, **customer: str
    ) -> Order:
        with self.placing(lines, visitor_token, **customer) as (order, _):
            return order

    @contextmanager
    def paying(self, order_id: str) -> Iterator[Connection]:
        """Mark an order paid; the block runs in the same transaction."""
        number = _number(order_id)
        with self.engine.begin() as conn:
            conn.execute(
                orders_table.update().where(orders_table.c.number == number).values(paid=True)
            )
            yield conn

    def mark_paid(self, order_id: str) -> None:
        with self.paying(order_id):
            pass

    def is_paid(self, order_id: str) -> bool:
        with self.engine.connect() as conn:
            paid = conn.execute(
                sa.select(orders_table.c.paid).where(orders_table.c.number == _number(order_id))
            ).scalar()
        return bool(paid)

    def get(self, order_id: str) -> Order | None:
        number = _number(order_id)
        if number is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(orders_table).where(orders_table.c.number == number)
            ).first()
        if row is None:
            return None
        lines = tuple(Line(CATALOGUE[sku], quantity) for sku, quantity in json.loads(row.lines))
        return Order(
            order_id,
            lines,
            email=row.email,
            phone=row.phone,
            name=row.name,
            zip=row.zip,
            visitor_token=row.visitor_token,
        )


def _number(order_id: str) -> Any:
    """The row of ``A-<number>``, ``None`` for anything else (a guessed or mangled URL)."""
    prefix, _, digits = order_id.partition("-")
    if prefix != "A" or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)
