"""Delivery to the Conversions API: the client and the sender that drains the outbox."""

from __future__ import annotations
