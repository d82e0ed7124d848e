"""The SES adapter against moto's SESv2 (sending), and SES's error answers (botocore's Stubber
plays SES for the answers moto cannot give: throttling, a paused account, GetAccount)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from voucher_distributor.adapters.ses import (
    QUOTA_RETRY_SECONDS,
    Ses,
    SesOutcomeUnknown,
    SesRejected,
    SesSendingStopped,
    SesThrottled,
)
from voucher_distributor.domain.email_message import (
    Sender,
    VoucherEmail,
    build_mime,
    render_email,
)

SENDER = "vouchers@acme.example"


def _raw(code: str = "CODE-1") -> bytes:
    email = VoucherEmail(
        first_name="Ada", last_name="L", voucher_code=code, program="Cloud", partner="Acme"
    )
    return build_mime(
        render_email(email), sender=Sender(SENDER, "Acme"), to="ada@example.com", sent_at=0
    )


@pytest.fixture
def sesv2():
    with mock_aws():
        client = boto3.client("sesv2", region_name="us-east-1")
        yield client


def test_a_raw_message_goes_out_through_sesv2(sesv2):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    sesv2.create_email_identity(EmailIdentity=SENDER)
    sent = Ses(sesv2=sesv2, configuration_set="vouchers").send(
        _raw("CODE-XYZ"), from_address=SENDER, to_address="ada@example.com", delivery_id="d-1"
    )
    assert sent.message_id
    messages = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert len(messages) == 1
    assert "CODE-XYZ" in messages[0].raw_data
    assert set(messages[0].destinations) == {"ada@example.com"}


def test_an_unverified_sender_is_refused_with_the_reason(sesv2):
    with pytest.raises(SesRejected, match="MessageRejected"):
        Ses(sesv2=sesv2).send(
            _raw(), from_address=SENDER, to_address="ada@example.com", delivery_id="d-1"
        )


def _stubbed(code: str, message: str = "", status: int = 400) -> Ses:
    client = boto3.client(
        "sesv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message=message, http_status_code=status
    )
    stubber.activate()
    return Ses(sesv2=client, configuration_set="vouchers")


def _send(ses: Ses) -> None:
    ses.send(_raw(), from_address=SENDER, to_address="ada@example.com", delivery_id="d-1")


def test_too_many_requests_is_throttling_retried_soon():
    with pytest.raises(SesThrottled) as caught:
        _send(_stubbed("TooManyRequestsException", "Maximum sending rate exceeded.", 429))
    assert not caught.value.daily_quota
    assert 0 < caught.value.retry_after < 60


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("LimitExceededException", "Daily message quota exceeded."),
        ("SendingQuotaExceeded", "quota"),
        ("TooManyRequestsException", "Daily message quota exceeded."),
    ],
)
def test_the_daily_quota_is_retried_at_the_longest_delay(code, message):
    with pytest.raises(SesThrottled) as caught:
        _send(_stubbed(code, message))
    assert caught.value.daily_quota
    assert caught.value.retry_after == QUOTA_RETRY_SECONDS


@pytest.mark.parametrize("code", ["SendingPausedException", "AccountSuspendedException"])
def test_a_paused_or_suspended_account_stops_sending(code):
    with pytest.raises(SesSendingStopped, match="resume sending"):
        _send(_stubbed(code, "Sending is paused for this account."))


@pytest.mark.parametrize(
    "code", ["MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException"]
)
def test_a_refused_message_fails_its_row_with_ses_reason(code):
    with pytest.raises(SesRejected, match=f"{code}: Address blacklisted"):
        _send(_stubbed(code, "Address blacklisted."))


def test_a_server_error_leaves_the_outcome_unknown():
    with pytest.raises(SesOutcomeUnknown):
        _send(_stubbed("InternalFailure", "oops", 500))


def test_the_send_rate_is_read_from_the_account():
    client = boto3.client(
        "sesv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    stubber = Stubber(client)
    stubber.add_response(
        "get_account",
        {"SendQuota": {"Max24HourSend": 50_000.0, "MaxSendRate": 14.0, "SentLast24Hours": 3.0}},
    )
    stubber.activate()
    assert Ses(sesv2=client).max_send_rate() == 14.0
