"""Standard Webhooks signatures (https://www.standardwebhooks.com), both ways.

Inbound API requests and outbound callbacks carry ``webhook-id``, ``webhook-timestamp`` (unix
seconds) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries over
``"<id>.<timestamp>.<body>"``, so a sender rotating its key can sign with both. Secrets are
``whsec_<base64 key>``; the key is the decoded bytes. Pure: the clock is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from voucher_distributor.models.webhook_secret import SECRET_PREFIX, secret_key

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: How far a timestamp may be from now, either way (the specification's recommendation).
TOLERANCE_S = 5 * 60


class SignatureInvalid(ValueError):
    """The request's Standard Webhooks headers do not verify; the message says which part."""


def new_secret() -> str:
    """A fresh ``whsec_`` secret: 32 random bytes, as the reference libraries make them."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` entry for one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a sender adds."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, message_id, timestamp, body),
    }


@dataclass(frozen=True)
class SignedMessage:
    """The Standard Webhooks headers of one request, read but not yet verified."""

    message_id: str
    timestamp: int
    signatures: tuple[str, ...]

    @classmethod
    def from_headers(cls, values: Mapping[str, str]) -> SignedMessage | None:
        """``None`` when the request carries no ``webhook-signature`` at all (unsigned)."""
        lowered = {k.lower(): v for k, v in values.items()}
        raw_signature = lowered.get(SIGNATURE_HEADER)
        if raw_signature is None:
            return None
        message_id = (lowered.get(ID_HEADER) or "").strip()
        if not message_id:
            raise SignatureInvalid("webhook-id is missing")
        try:
            timestamp = int((lowered.get(TIMESTAMP_HEADER) or "").strip())
        except ValueError as exc:
            raise SignatureInvalid("webhook-timestamp is missing or not unix seconds") from exc
        entries = tuple(
            part.split(",", 1)[1]
            for part in raw_signature.split()
            if part.startswith("v1,") and len(part) > 3
        )
        if not entries:
            raise SignatureInvalid("webhook-signature has no v1 signature")
        return cls(message_id, timestamp, entries)

    def check_time(self, now: int, tolerance_s: int = TOLERANCE_S) -> None:
        if self.timestamp < now - tolerance_s:
            raise SignatureInvalid("webhook-timestamp is too old (more than 5 minutes)")
        if self.timestamp > now + tolerance_s:
            raise SignatureInvalid("webhook-timestamp is in the future (more than 5 minutes)")

    def signed_by(self, secret: str, body: bytes) -> bool:
        """Whether any of the message's signatures is this secret's (constant-time compare)."""
        expected = signature(secret, self.message_id, self.timestamp, body).split(",", 1)[1]
        found = False
        for candidate in self.signatures:
            found |= hmac.compare_digest(expected.encode(), candidate.encode())
        return found

    def first_signer(self, candidates: Iterable[tuple[str, str]], body: bytes) -> str | None:
        """The name of the first (name, secret) pair whose secret signed the message."""
        for name, secret in candidates:
            if self.signed_by(secret, body):
                return name
        return None


def verify(
    secret: str, values: Mapping[str, str], body: bytes, *, now: int, tolerance_s: int = TOLERANCE_S
) -> str:
    """What a receiver does: check the time and the signature; return the message id."""
    message = SignedMessage.from_headers(values)
    if message is None:
        raise SignatureInvalid("webhook-signature is missing")
    message.check_time(now, tolerance_s)
    if not message.signed_by(secret, body):
        raise SignatureInvalid("no webhook-signature matches")
    return message.message_id
