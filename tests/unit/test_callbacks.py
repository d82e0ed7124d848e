import json
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from voucher_distributor.adapters.callbacks import (
    SIGNATURE_HEADER,
    CallbackRefused,
    CallbackSender,
    check_callback_url,
    sign,
    verify,
    webhook_secret,
)
from voucher_distributor.domain import standard_webhooks
from voucher_distributor.models.messages import ALLOW_LOOPBACK_CALLBACKS, DistributionRequest


def public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


@pytest.mark.parametrize(
    ("url", "addresses", "why"),
    [
        ("http://hooks.example.com/x", ["93.184.215.14"], "https"),
        ("https://user:pw@hooks.example.com/x", ["93.184.215.14"], "credentials"),
        ("https://localhost/x", ["127.0.0.1"], "non-public"),
        ("https://metadata.internal/x", ["169.254.169.254"], "non-public"),
        ("https://intranet.example/x", ["10.1.2.3"], "non-public"),
        ("https://v6.example/x", ["::1"], "non-public"),
        ("https://mixed.example/x", ["93.184.215.14", "192.168.1.1"], "non-public"),
        ("https:///nohost", [], "no host"),
    ],
)
def test_callback_urls_that_are_refused(url, addresses, why):
    with pytest.raises(CallbackRefused, match=why):
        check_callback_url(url, lambda host, port: addresses)


def test_public_https_url_is_pinned_to_the_checked_address():
    assert check_callback_url("https://hooks.example.com/cb", public) == (
        "hooks.example.com",
        "93.184.215.14",
    )


def test_signature_verifies_and_detects_tampering_and_staleness():
    body = b'{"batchId":"f-1","status":"completed"}'
    header = sign("k3y", 1_700_000_000, body)
    assert verify("k3y", header, body, now=1_700_000_010)
    assert not verify("k3y", header, body + b" ", now=1_700_000_010)
    assert not verify("other", header, body, now=1_700_000_010)
    assert not verify("k3y", header, body, now=1_700_000_000 + 3600)
    assert not verify("k3y", "garbage", body, now=1_700_000_000)


# ---------------------------------------------------------------------- one attempt, signed


def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def _sender(answer, *, resolver=public, allow_loopback: bool = False) -> CallbackSender:
    return CallbackSender(
        resolver=resolver, transport=httpx.MockTransport(answer), allow_loopback=allow_loopback
    )


def test_every_attempt_carries_standard_webhooks_headers_the_reference_package_verifies():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    body = json.dumps({"type": "Voucher Batch Completed", "batchId": "r-1"}).encode()
    sender = _sender(answer)
    first = sender.attempt("https://hooks.example.com/cb", body, "k3y", message_id="msg_r-1_c")
    second = sender.attempt("https://hooks.example.com/cb", body, "k3y", message_id="msg_r-1_c")
    assert first.ok
    assert second.ok
    assert first.status == 200
    for request in seen:
        headers = dict(request.headers)
        assert headers["webhook-id"] == "msg_r-1_c"
        assert headers["webhook-signature"].startswith("v1,")
        assert Webhook(webhook_secret("k3y")).verify(request.content, headers)["batchId"] == "r-1"
        # Today's signature stays beside it, over the same bytes.
        assert verify(
            "k3y", headers[SIGNATURE_HEADER.lower()], request.content, now=int(time.time())
        )
        with pytest.raises(WebhookVerificationError):
            Webhook(webhook_secret("other")).verify(request.content, headers)
    assert seen[0].content == seen[1].content


def test_the_whsec_secret_is_the_signing_key_in_standard_form():
    key = "s0meGeneratedKey48charsLongFromSecretsManager00"
    secret = webhook_secret(key)
    assert secret.startswith("whsec_")
    assert standard_webhooks.secret_key(secret) == key.encode()
    fresh = standard_webhooks.new_secret()
    assert webhook_secret(fresh) == fresh  # a whsec_ value is used as it is


def test_an_attempt_reports_failures_instead_of_raising():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert _sender(down).attempt("https://hooks.example.com/x", b"{}", "k").status == (
        "ConnectError"
    )
    assert (
        _sender(lambda r: httpx.Response(503))
        .attempt("https://hooks.example.com/x", b"{}", "k")
        .status
        == 503
    )
    private = _sender(down, resolver=lambda host, port: ["10.0.0.1"])
    refused = private.attempt("https://10.0.0.1/x", b"{}", "k", message_id="m")
    assert refused.status == "refused"
    assert "non-public" in refused.detail


def test_loopback_receivers_are_allowed_only_when_the_local_runner_says_so():
    assert check_callback_url("http://127.0.0.1:9000/h", loopback, allow_loopback=True) == (
        "127.0.0.1",
        "127.0.0.1",
    )
    assert check_callback_url("https://localhost/h", loopback, allow_loopback=True)
    with pytest.raises(CallbackRefused, match="https"):
        check_callback_url("http://127.0.0.1:9000/h", loopback)
    with pytest.raises(CallbackRefused, match="non-public"):
        check_callback_url("https://localhost/h", loopback)
    # Locally too: plain http only to loopback, and private ranges stay refused.
    with pytest.raises(CallbackRefused, match="https"):
        check_callback_url("http://hooks.example.com/h", public, allow_loopback=True)
    with pytest.raises(CallbackRefused, match="non-public"):
        check_callback_url("https://intranet/h", lambda h, p: ["10.1.2.3"], allow_loopback=True)

    def answer(request: httpx.Request) -> httpx.Response:
        assert "sni_hostname" not in request.extensions  # plain http: no TLS name
        return httpx.Response(204)

    local = _sender(answer, resolver=loopback, allow_loopback=True)
    assert local.attempt("http://localhost:9000/h", b"{}", "k", message_id="m").status == 204


def test_a_request_may_name_a_loopback_http_callback_only_in_a_local_run():
    body = {
        "requestId": "r",
        "recipients": [{"email": "a@acme.example"}],
        "callbackUrl": "http://127.0.0.1:9000/hook",
    }
    local = {ALLOW_LOOPBACK_CALLBACKS: True}
    assert DistributionRequest.model_validate(body, context=local).callback_url
    with pytest.raises(ValueError, match="https"):
        DistributionRequest.model_validate(body)
    with pytest.raises(ValueError, match="https"):
        DistributionRequest.model_validate(
            {**body, "callbackUrl": "http://hooks.example/x"}, context=local
        )
