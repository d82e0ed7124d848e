import pytest

from voucher_distributor.adapters.callbacks import (
    CallbackRefused,
    check_callback_url,
    sign,
    verify,
)


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
