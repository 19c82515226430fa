"""The dedup ledger: verdicts per event, coverage, the chart, metrics and the page."""

from __future__ import annotations
