"""Standard Webhooks signatures: ours against the reference implementation, both ways."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from voucher_distributor.domain import standard_webhooks as sw

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's own example secret


def test_the_specification_example_signature() -> None:
    body = b'{"test": 2432232314}'
    assert (
        sw.signature(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@given(body=st.text(max_size=300).map(str.encode), message_id=st.text(min_size=1))
def test_what_we_sign_the_reference_verifies(body: bytes, message_id: str) -> None:
    message_id = message_id.replace(" ", "_") or "m"
    now = int(time.time())
    headers = sw.headers(SECRET, message_id, now, body)
    Webhook(SECRET).verify(body, headers, json_parse=False)


def test_what_the_reference_signs_we_verify_with_key_rotation() -> None:
    body = b'{"requestId":"r-1"}'
    now = int(time.time())
    old, new = sw.new_secret(), sw.new_secret()
    at = datetime.fromtimestamp(now, UTC)
    both = " ".join(Webhook(s).sign("msg_1", at, body.decode()) for s in (old, new))
    values = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(now), "Webhook-Signature": both}
    assert sw.verify(new, values, body, now=now) == "msg_1"
    assert sw.verify(old, values, body, now=now) == "msg_1"
    with pytest.raises(sw.SignatureInvalid, match="no webhook-signature matches"):
        sw.verify(sw.new_secret(), values, body, now=now)


@pytest.mark.parametrize(
    ("skew", "message"), [(-301, "too old"), (301, "in the future")], ids=["stale", "future"]
)
def test_timestamps_beyond_five_minutes_are_refused(skew: int, message: str) -> None:
    now = 1_800_000_000
    values = sw.headers(SECRET, "msg_1", now + skew, b"{}")
    with pytest.raises(sw.SignatureInvalid, match=message):
        sw.verify(SECRET, values, b"{}", now=now)
    assert sw.verify(SECRET, values, b"{}", now=now + skew) == "msg_1"


def test_a_changed_body_does_not_verify_with_either_implementation() -> None:
    now = int(time.time())
    values = sw.headers(SECRET, "msg_1", now, b'{"a":1}')
    with pytest.raises(sw.SignatureInvalid):
        sw.verify(SECRET, values, b'{"a":2}', now=now)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"a":2}', values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook-signature": "v1,abc"}, "webhook-id is missing"),
        ({"webhook-id": "m", "webhook-signature": "v1,abc"}, "webhook-timestamp"),
        ({"webhook-id": "m", "webhook-timestamp": "x", "webhook-signature": "v1,a"}, "timestamp"),
        ({"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v2,a"}, "no v1"),
    ],
)
def test_malformed_headers_say_what_is_wrong(values: dict[str, str], message: str) -> None:
    with pytest.raises(sw.SignatureInvalid, match=message):
        sw.SignedMessage.from_headers(values)


def test_no_signature_header_means_unsigned() -> None:
    assert sw.SignedMessage.from_headers({"webhook-id": "m"}) is None


def test_secrets_are_whsec_base64_and_unpadded_ones_are_read() -> None:
    secret = sw.new_secret()
    assert secret.startswith("whsec_")
    assert len(sw.secret_key(secret)) == 32
    assert sw.secret_key(secret.rstrip("=")) == sw.secret_key(secret)
    with pytest.raises(ValueError, match="base64"):
        sw.secret_key("whsec_not base64!")
