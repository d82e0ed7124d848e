import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from voucher_distributor.adapters.certiverse.retry import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_retry_after_in_seconds():
    assert parse_retry_after("7", now=NOW) == 7.0


def test_retry_after_as_http_date():
    later = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=NOW) == pytest.approx(30.0)


def test_retry_after_in_the_past_waits_nothing():
    earlier = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "-3", "1.5.2"])
def test_unreadable_retry_after_is_ignored(value):
    assert parse_retry_after(value, now=NOW) is None


def test_backoff_is_jittered_and_capped():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, rng=random.Random(7))
    for attempt in range(1, 12):
        cap = min(4.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(0 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jitter: not the same wait for every caller


def test_server_hint_wins_over_backoff():
    policy = RetryPolicy(base_delay_s=100.0, rng=random.Random(1))
    assert policy.delay(1, "2") == 2.0
