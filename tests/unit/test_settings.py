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
