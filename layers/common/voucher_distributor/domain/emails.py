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


def email_domain(address: str) -> str:
    """The domain part, lower-cased."""
    return address.rpartition("@")[2].lower()


_ANY_ADDRESS = re.compile(r"[^\s'\"<>(),;:@]+@[^\s'\"<>(),;:@]+")


def redact_emails(text: str) -> str:
    """``text`` with anything shaped like an e-mail address replaced, for logs and events."""
    return _ANY_ADDRESS.sub("<e-mail>", text)
