"""The ``whsec_`` secret format (Standard Webhooks): a schema fact the API clients model checks."""

from __future__ import annotations

import base64
import binascii

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (a secret without the prefix is read the same way)."""
    text = secret.strip().removeprefix(SECRET_PREFIX)
    text += "=" * (-len(text) % 4)  # unpadded base64, as the reference libraries accept
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key
