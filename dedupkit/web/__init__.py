"""The web face: the blueprint (snippet, events endpoint, ledger), templating and assets."""

from __future__ import annotations
