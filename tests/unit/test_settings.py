import pytest

from voucher_distributor.settings import Settings, SettingsError

ENV = {
    "LEDGER_TABLE": "t", "INBOX_BUCKET": "b", "PURCHASE_QUEUE_URL": "q1", "POLL_QUEUE_URL": "q2",
    "REPORT_QUEUE_URL": "q3", "CERTIVERSE_BASE_URL": "https://api.example/api",
}  # fmt: skip


def test_settings_from_environment_with_defaults():
    settings = Settings.from_environ({**ENV, "POLL_DEADLINE_SECONDS": "3600"})
    assert settings.poll_deadline_seconds == 3600
    assert settings.poll_max_delay_seconds == 900
    assert settings.certiverse_token_secret_arn == ""


def test_missing_or_invalid_variables_are_named():
    with pytest.raises(SettingsError, match="LEDGER_TABLE"):
        Settings.from_environ({k: v for k, v in ENV.items() if k != "LEDGER_TABLE"})
    with pytest.raises(SettingsError, match="POLL_MAX_DELAY_SECONDS"):
        Settings.from_environ({**ENV, "POLL_MAX_DELAY_SECONDS": "3600"})  # SQS caps delays
    with pytest.raises(SettingsError, match="CERTIVERSE_BASE_URL"):
        Settings.from_environ({**ENV, "CERTIVERSE_BASE_URL": "ftp://x"})


def test_preflight_outage_waits_grow_to_about_an_hour_and_honour_retry_after():
    """Issue 23 item 1: 30 s, 2 min, 10 min, 45 min; the last repeats; Retry-After wins."""
    from voucher_distributor.pipeline.ingest import preflight_retry_delay

    settings = Settings.from_environ(ENV)
    waits = [preflight_retry_delay(settings, n, None) for n in range(1, 5)]
    assert waits == [30, 120, 600, 2700]
    assert 3000 <= sum(waits) <= 3900  # about an hour in all
    assert settings.max_ingest_attempts == len(waits) + 1  # the 5th delivery fails the rows
    assert preflight_retry_delay(settings, 9, None) == 2700
    assert preflight_retry_delay(settings, 1, 95.2) == 96  # a longer Retry-After is honoured
    assert preflight_retry_delay(settings, 3, 5) == 600
    assert preflight_retry_delay(settings, 1, 10**6) == 43_200  # SQS's longest visibility
    shrunk = Settings.from_environ({**ENV, "INGEST_RETRY_DELAYS": "1, 2"})
    assert [preflight_retry_delay(shrunk, n, None) for n in (1, 2, 3)] == [1, 2, 2]
    with pytest.raises(SettingsError, match="INGEST_RETRY_DELAYS"):
        Settings.from_environ({**ENV, "INGEST_RETRY_DELAYS": "0,5"})
