"""Where the Certiverse bearer token comes from: the environment locally, Secrets Manager in AWS.

Every provider can be asked to refresh: the client does so once on a 401, in case the secret
was rotated since it was cached.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

from voucher_distributor.adapters.certiverse.errors import TokenUnavailable


class TokenProvider(Protocol):
    def get_token(self, *, refresh: bool = False) -> str: ...


class StaticToken:
    """A fixed token (tests, the local runner)."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise TokenUnavailable("the Certiverse token is empty")
        self._token = token.strip()

    def get_token(self, *, refresh: bool = False) -> str:  # noqa: ARG002 - nothing to refresh
        return self._token


class EnvToken:
    """Reads the token from an environment variable (``CERTIVERSE_TOKEN``) on every refresh."""

    def __init__(self, variable: str = "CERTIVERSE_TOKEN") -> None:
        self._variable = variable
        self._token: str | None = None

    def get_token(self, *, refresh: bool = False) -> str:
        if self._token is None or refresh:
            value = os.environ.get(self._variable, "").strip()
            if not value:
                raise TokenUnavailable(
                    f"set {self._variable} to the Certiverse API token (a bearer token of a user "
                    "with the PartnerManageVouchers function point)"
                )
            self._token = value
        return self._token


class SecretsManagerToken:
    """Reads the token from Secrets Manager through Powertools parameters, cached for
    ``max_age_s``. The secret holds the token itself or a JSON object with a ``token`` key."""

    def __init__(self, secret_id: str, *, max_age_s: int = 300) -> None:
        self._secret_id = secret_id
        self._max_age_s = max_age_s

    def get_token(self, *, refresh: bool = False) -> str:
        # Imported here: parameters pulls in boto3, which only AWS-side callers need.
        from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

        try:
            raw = parameters.get_secret(
                self._secret_id, max_age=self._max_age_s, force_fetch=refresh
            )
        except parameters.exceptions.GetParameterError as exc:
            raise TokenUnavailable(
                f"could not read the Certiverse token secret {self._secret_id!r}: {exc}. "
                "Check that it exists, holds a value and that the function may read it"
            ) from exc
        token = token_from_secret(raw)
        if not token:
            raise TokenUnavailable(
                f"the Certiverse token secret {self._secret_id!r} is empty: put the API token in it"
            )
        return token


def token_from_secret(raw: str | bytes | dict[str, object] | None) -> str:
    """The token in a secret's value: the value itself, or a JSON object's ``token``."""
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                return text
        else:
            return text
    if isinstance(raw, dict):
        value = raw.get("token") or raw.get("Token") or raw.get("apiToken")
        return value.strip() if isinstance(value, str) else ""
    return ""
