"""Moments as every output writes them: ISO 8601 in UTC, whole seconds, ``Z`` — the summaries,
events, the results CSV, ``find``/``voucher``/``sync`` and the HTTP API alike."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(epoch: float) -> str:
    """``2026-11-30T06:26:05Z`` (a fraction of a second is dropped)."""
    return iso_z(datetime.fromtimestamp(int(epoch), UTC))


def iso_z(moment: datetime) -> str:
    """``2026-11-30T06:26:05Z`` for any moment; a naive one is taken to be UTC already (as
    Certiverse's are). Microseconds are dropped, as in the results CSV."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_day(epoch: float) -> str:
    """The UTC day a moment falls on (``2026-11-30``): the daily voucher count's key."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")
