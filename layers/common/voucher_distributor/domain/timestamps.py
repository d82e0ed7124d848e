"""Epoch seconds as the summaries, events and the daily count write them (always UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch: float) -> str:
    """``2026-11-30T06:26:05Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def utc_day(epoch: float) -> str:
    """The UTC day a moment falls on (``2026-11-30``): the daily voucher count's key."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")
