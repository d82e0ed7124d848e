import pytest

from voucher_distributor.domain.emails import email_domain, is_valid_email, normalise_email


@pytest.mark.parametrize(
    "address",
    ["ada@example.com", "ada.lovelace+exam@mail.example.co.uk", "o'brien@example.org", "x@a-b.io"],
)
def test_plausible_addresses_are_valid(address):
    assert is_valid_email(address)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@example",
        "ada lovelace@example.com",
        "ada@@example.com",
        "ada@-example.com",
        ".ada@example.com",
        "ada.@example.com",
        "a..b@example.com",
        "ada@example..com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_malformed_addresses_are_invalid(address):
    assert not is_valid_email(address)


def test_normalise_trims_and_lowercases():
    assert normalise_email("  Ada.Lovelace@Example.COM \t") == "ada.lovelace@example.com"
    assert email_domain("Ada@Mail.Example.COM") == "mail.example.com"
