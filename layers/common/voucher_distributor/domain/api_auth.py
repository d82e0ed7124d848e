"""Who is calling the HTTP API, and may they: pure, given the clients and the clock.

A request names no client: its Standard Webhooks signature (checked against every active
client's secrets) or its bearer token (only clients that have one) identifies it. Every
comparison is constant-time, and a failure says what was wrong without saying which clients
exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from voucher_distributor.domain.standard_webhooks import SignatureInvalid, SignedMessage
from voucher_distributor.models.api import ApiClient, ApiClients, Scope


class Unauthorized(Exception):
    """401: the request does not prove who sent it."""


class Forbidden(Exception):
    """403: the client is known but not allowed to do this."""


@dataclass(frozen=True)
class Caller:
    client_id: str
    client: ApiClient
    #: The request's ``webhook-id`` when it was signed (the idempotency key of last resort),
    #: and its ``webhook-timestamp``.
    webhook_id: str | None = None
    signed_at: int | None = None

    def require(self, scope: Scope) -> None:
        if scope not in self.client.scopes:
            raise Forbidden(
                f"client {self.client_id!r} lacks the {scope.value!r} scope; an operator can "
                "grant it with `voucher-distributor api-client add` (see the README)"
            )


def authenticate(
    clients: ApiClients, headers: Mapping[str, str], body: bytes, *, now: int
) -> Caller:
    """The caller of a request, or :class:`Unauthorized` saying why not."""
    lowered = {k.lower(): v for k, v in headers.items()}
    active = clients.active()
    try:
        message = SignedMessage.from_headers(lowered)
    except SignatureInvalid as exc:
        raise Unauthorized(str(exc)) from exc
    if message is not None:
        try:
            message.check_time(now)
        except SignatureInvalid as exc:
            raise Unauthorized(f"{exc}; sign with the current time") from exc
        candidates = [(name, s) for name, c in active.items() for s in c.secrets]
        signer = message.first_signer(candidates, body)
        if signer is None:
            raise Unauthorized("the webhook-signature matches no API client's secret")
        return Caller(
            signer, active[signer], webhook_id=message.message_id, signed_at=message.timestamp
        )
    scheme, _, token = lowered.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found = _bearer_client(active, token.strip())
        if found is None:
            raise Unauthorized("the bearer token belongs to no API client")
        return Caller(found, active[found])
    raise Unauthorized(
        "sign the request (webhook-id, webhook-timestamp, webhook-signature) or send "
        "Authorization: Bearer <token>"
    )


def _bearer_client(active: Mapping[str, ApiClient], token: str) -> str | None:
    found = None
    for name, client in active.items():
        if client.bearer_token is not None and hmac.compare_digest(
            client.bearer_token.encode(), token.encode()
        ):
            found = found or name
    return found
