"""The pure part of durable callbacks: schedule, decisions, ids and URLs fit for logs."""

from __future__ import annotations

import pytest

from voucher_distributor.domain.callbacks import (
    DEFAULT_RETRY_SCHEDULE,
    MAX_HOP_SECONDS,
    ScheduleError,
    after_attempt,
    attempt_budget,
    event_slug,
    hop_delay,
    parse_schedule,
    safe_url,
    wait_after,
    webhook_id,
)
from voucher_distributor.settings import Settings, SettingsError

NOW = 1_800_000_000


def test_the_default_schedule_is_svixs_and_retries_for_more_than_a_day() -> None:
    schedule = parse_schedule(DEFAULT_RETRY_SCHEDULE)
    assert schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert attempt_budget(schedule) == 8
    assert sum(schedule) >= 24 * 3600
    assert schedule[0] <= 5  # the first retry within seconds


@pytest.mark.parametrize("text", ["", " , ", "5,0", "5,-1", "5,1.5", "five", "5;300"])
def test_a_schedule_that_is_not_positive_whole_seconds_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(text)


def test_settings_refuse_a_bad_schedule_at_cold_start_naming_the_variable() -> None:
    env = {
        "LEDGER_TABLE": "t",
        "INBOX_BUCKET": "b",
        "PURCHASE_QUEUE_URL": "q",
        "POLL_QUEUE_URL": "q",
        "REPORT_QUEUE_URL": "q",
        "CERTIVERSE_BASE_URL": "https://api.example/api",
    }
    assert Settings.from_environ(env).callback_schedule == parse_schedule(DEFAULT_RETRY_SCHEDULE)
    assert not Settings.from_environ(env).callback_allow_loopback
    compressed = Settings.from_environ({**env, "CALLBACK_RETRY_SCHEDULE": "1,1,1"})
    assert compressed.callback_schedule == (1, 1, 1)
    with pytest.raises(SettingsError, match="CALLBACK_RETRY_SCHEDULE"):
        Settings.from_environ({**env, "CALLBACK_RETRY_SCHEDULE": "5,soon"})


def test_waits_follow_the_schedule_and_end_after_the_last_attempt() -> None:
    schedule = (5, 300, 1800)
    assert [wait_after(schedule, n) for n in (1, 2, 3, 4)] == [5, 300, 1800, None]


def test_hops_are_at_most_fifteen_minutes() -> None:
    assert hop_delay(NOW + 36000, NOW) == MAX_HOP_SECONDS
    assert hop_delay(NOW + 5, NOW) == 5
    assert hop_delay(NOW - 10, NOW) == 0


def test_a_2xx_delivers() -> None:
    assert after_attempt(204, attempt=3, schedule=(1,), now=NOW).state == "delivered"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429, "ConnectError",
                                    "ReadTimeout", "unresolvable"])  # fmt: skip
def test_transient_failures_are_retried_on_schedule(status: int | str) -> None:
    outcome = after_attempt(status, attempt=2, schedule=(5, 300, 1800), now=NOW)
    assert outcome.state == "pending"
    assert outcome.next_attempt_at == NOW + 300


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 301, 302, "refused"])
def test_answers_that_will_not_change_stop_at_once(status: int | str) -> None:
    outcome = after_attempt(status, attempt=1, schedule=(5, 300), now=NOW)
    assert outcome.state == "failed"
    assert outcome.next_attempt_at is None
    assert outcome.reason


def test_the_last_attempt_fails_the_delivery_saying_how_many() -> None:
    outcome = after_attempt(503, attempt=3, schedule=(5, 300), now=NOW)
    assert outcome.state == "failed"
    assert outcome.reason == "HTTP 503 on the last of 3 attempts"


def test_webhook_ids_are_stable_per_batch_and_event() -> None:
    slug = event_slug("Voucher Batch Completed")
    assert slug == "completed"
    assert event_slug("Voucher Batch Awaiting Approval") == "awaiting-approval"
    assert event_slug("Voucher Batch Dry Run Completed") == "dry-run-completed"
    assert event_slug("Vouchers Expiring", key="2026-12-01") == "vouchers-expiring-2026-12-01"
    assert webhook_id("r-abc", slug) == webhook_id("r-abc", slug) == "msg_r-abc_completed"
    assert webhook_id("r-abc", "rejected") != webhook_id("r-abd", "rejected")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/cb?token=abc#x", "https://hooks.example/cb"),
        ("https://user:pw@hooks.example:8443/cb", "https://hooks.example:8443/cb"),
        ("http://[::1]:9000/hook?k=v", "http://[::1]:9000/hook"),
    ],
)
def test_urls_are_shown_without_credentials_or_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown
