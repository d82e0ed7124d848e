"""The parts of an HTTP API request the routes read, taken from the event by the handler."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiRequest:
    """One request (API Gateway HTTP API, payload 2.0), as plain values."""

    headers: Mapping[str, str]
    body: str = ""
    base64_encoded: bool = False
    query: Mapping[str, str] = field(default_factory=dict)
    #: The API's domain name, as the request reached it.
    domain_name: str = ""
    #: The method, path and raw query string: what a used signature is bound to.
    method: str = ""
    path: str = ""
    raw_query: str = ""

    @property
    def raw_body(self) -> bytes:
        # Not Powertools' decoded_body: it decodes the bytes as UTF-8, and a CSV may be cp1252.
        return base64.b64decode(self.body) if self.base64_encoded else self.body.encode()

    def header(self, name: str) -> str | None:
        """A header's value, whatever case it came in; ``name`` in lower case."""
        for key, value in self.headers.items():
            if key.lower() == name:
                return str(value)
        return None

    @property
    def base_url(self) -> str:
        scheme = self.header("x-forwarded-proto") or "https"
        return f"{scheme}://{self.domain_name}"
