"""The HTTP API's clients, kept in one Secrets Manager secret (``{"clients": {...}}``).

Read through Powertools parameters with a short cache, so a revoked client is refused within
``API_CLIENTS_CACHE_SECONDS`` without a cold start. Edited by ``voucher-distributor api-client``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from voucher_distributor.models.api import ApiClients


class ApiClientsUnreadable(RuntimeError):
    """The clients secret is missing or malformed: see ``voucher-distributor api-client``."""


def parse_clients(text: str | bytes) -> ApiClients:
    try:
        return ApiClients.model_validate_json(text or "{}")
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise ApiClientsUnreadable(
            f"the API clients secret is not valid ({fields}); list and fix it with "
            "`voucher-distributor api-client list`"
        ) from exc


class ApiClientStore:
    """Cached reads for the API function."""

    def __init__(self, secret_id: str, *, max_age_s: int = 60) -> None:
        self._secret_id = secret_id
        self._max_age_s = max_age_s

    def load(self) -> ApiClients:
        if not self._secret_id:
            return ApiClients()
        from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

        try:
            raw = parameters.get_secret(self._secret_id, max_age=self._max_age_s)
        except parameters.exceptions.GetParameterError as exc:
            raise ApiClientsUnreadable(f"the API clients secret cannot be read: {exc}") from exc
        return parse_clients(raw if isinstance(raw, (str, bytes)) else json.dumps(raw))


def read_clients(secretsmanager: Any, secret_id: str) -> ApiClients:
    """Uncached read (operators' edits); an empty or never-set secret is no clients."""
    try:
        got = secretsmanager.get_secret_value(SecretId=secret_id)
    except secretsmanager.exceptions.ResourceNotFoundException as exc:
        raise ApiClientsUnreadable(f"no secret {secret_id}") from exc
    return parse_clients(got.get("SecretString") or "{}")


def write_clients(secretsmanager: Any, secret_id: str, clients: ApiClients) -> None:
    secretsmanager.put_secret_value(
        SecretId=secret_id, SecretString=json.dumps(clients.to_secret())
    )
