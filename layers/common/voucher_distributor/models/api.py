"""Shapes of the HTTP API: its clients (the Secrets Manager secret) and its answers."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voucher_distributor.models.webhook_secret import secret_key


class Scope(StrEnum):
    """What an API client may do: submit distributions, read them, approve or reject them."""

    SUBMIT = "submit"
    READ = "read"
    APPROVE = "approve"


class ApiClient(BaseModel):
    """One HR system (or helpdesk tool) allowed to call the API.

    Signs its requests with any of ``secrets`` (Standard Webhooks, ``whsec_``; two during a key
    rotation), or, when ``bearer_token`` is set, may send that token instead (senders that
    cannot sign). Deleting the entry, or ``revoked: true``, shuts that client out alone.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, defer_build=True)

    scopes: frozenset[Scope] = Field(min_length=1)
    secrets: tuple[str, ...] = ()
    bearer_token: str | None = Field(default=None, alias="bearerToken", min_length=32)
    revoked: bool = False
    description: str = ""
    #: The partners the client works for (``api-client add --partners``). ``None`` with
    #: ``all_partners`` false is an entry written before clients were bound: it keeps every
    #: partner, and ``api-client list`` flags it until ``api-client update`` narrows it.
    partners: tuple[str, ...] | None = None
    #: Every partner of the stack (``--all-partners``): an operator's own tool.
    all_partners: bool = Field(default=False, alias="allPartners")
    #: Optionally, the only programs (of those partners) the client may use.
    programs: tuple[str, ...] | None = None

    @field_validator("partners", "programs")
    @classmethod
    def _names(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is None:
            return None
        names = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
        if not names:
            raise ValueError("name at least one, or leave the field out")
        return names

    @property
    def unbound(self) -> bool:
        """An entry from before clients were bound to partners: it reaches every partner."""
        return self.partners is None and not self.all_partners

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            secret_key(value)  # raises with what a secret must look like
        return values


class ApiClients(BaseModel):
    """The API clients secret's JSON: ``{"clients": {"<client id>": {…}}}``."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    clients: dict[str, ApiClient] = Field(default_factory=dict)

    def active(self) -> dict[str, ApiClient]:
        return {name: c for name, c in self.clients.items() if not c.revoked}

    def to_secret(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
