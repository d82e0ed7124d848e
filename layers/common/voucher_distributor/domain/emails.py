"""E-mail address checks shared by the client, the sandbox and ingest."""

from __future__ import annotations

import re

# Deliberately conservative, in line with what web APIs usually accept as "valid email format":
# one @, a non-empty local part without spaces, a dotted domain of letters, digits and hyphens.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
MAX_EMAIL_LENGTH = 254


def normalise_email(raw: str) -> str:
    """Trim and lower-case, the form every comparison and ledger key uses."""
    return raw.strip().lower()


def is_valid_email(address: str) -> bool:
    """True when ``address`` has a plausible mailbox format (no DNS look-up)."""
    if not address or len(address) > MAX_EMAIL_LENGTH:
        return False
    local, _, _ = address.rpartition("@")
    if len(local) > 64 or local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return _EMAIL.fullmatch(address) is not None


_LOCAL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.!#$%&'*+/=?^_`{|}~-"
)
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MALFORMED = "malformed e-mail address"


def email_problem(address: str) -> str | None:
    """What is wrong with ``address`` in words a person can fix (None when it is valid).

    Every answer starts "malformed e-mail address: ". Non-ASCII letters are refused with the
    reason: the Certiverse API document asks only for "a valid email format" and says nothing
    of internationalised addresses, so a purchase or look-up with one may be refused there.
    """
    if is_valid_email(address):
        return None
    why = _why_malformed(address)
    return f"{MALFORMED}: {why}"


def _why_malformed(address: str) -> str:  # noqa: PLR0911 - one answer per kind of mistake
    if not address:
        return "it is empty"
    if len(address) > MAX_EMAIL_LENGTH:
        return f"it is {len(address)} characters long; the most is {MAX_EMAIL_LENGTH}"
    ats = address.count("@")
    if ats == 0:
        return "there is no @"
    if ats > 1:
        return f"it has {ats} @ signs; an address has exactly one"
    if any(char.isspace() for char in address):
        return "it holds a space"
    foreign = next((char for char in address if not char.isascii()), None)
    if foreign is not None:
        return (
            f"{foreign!r} is not an ASCII character; Certiverse asks for a plain e-mail format "
            "and may refuse internationalised addresses: write it as the mail system spells "
            "it in ASCII"
        )
    local, _, domain = address.partition("@")
    return _why_parts_malformed(local, domain)


def _why_parts_malformed(local: str, domain: str) -> str:  # noqa: PLR0911
    if not local:
        return "there is nothing before the @"
    if not domain:
        return "there is no domain after the @"
    if len(local) > 64:
        return "the part before the @ is longer than 64 characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before the @ starts or ends with a dot, or has two dots in a row"
    bad = next((char for char in local if char not in _LOCAL_CHARS), None)
    if bad is not None:
        return f"{bad!r} is not allowed before the @"
    if "." not in domain:
        return f"the domain {domain!r} has no dot (e.g. {domain}.com)"
    labels = domain.split(".")
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return f"the domain {domain!r} is not a valid domain name"
    return f"the domain {domain!r} does not end in a top-level domain of letters"


def email_domain(address: str) -> str:
    """The domain part, lower-cased."""
    return address.rpartition("@")[2].lower()


_ANY_ADDRESS = re.compile(r"[^\s'\"<>(),;:@]+@[^\s'\"<>(),;:@]+")


def redact_emails(text: str) -> str:
    """``text`` with anything shaped like an e-mail address replaced, for logs and events."""
    return _ANY_ADDRESS.sub("<e-mail>", text)
