"""Signed completion callbacks to the URL an HR request named.

Safety: HTTPS only; the host must resolve to public addresses only (no loopback, private,
link-local such as 169.254.169.254, or reserved ranges), and the request is sent to the address
that was checked (pinned, with the original host name for TLS verification), so DNS cannot be
switched between the check and the call. Redirects are not followed.

Signature: ``X-Voucher-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``,
with the key from Secrets Manager; receivers recompute it and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voucher-Signature"
Resolver = Callable[[str, int], list[str]]


class CallbackRefused(ValueError):
    """The callback URL is not allowed (not HTTPS, or not a public address)."""


class CallbackFailed(RuntimeError):
    """The receiver did not accept the callback after the retries."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does (and what our tests do): recompute and compare in constant time."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_callback_url(url: str, resolver: Resolver = system_resolver) -> tuple[str, str]:
    """Return (host, the public address to connect to), or raise :class:`CallbackRefused`."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise CallbackRefused("callbackUrl must use https://")
    host = parts.hostname
    if not host:
        raise CallbackRefused("callbackUrl has no host")
    if parts.username or parts.password:
        raise CallbackRefused("callbackUrl must not carry credentials")
    try:
        addresses = resolver(host, parts.port or 443)
    except OSError as exc:
        raise CallbackRefused(f"callbackUrl host {host!r} does not resolve") from exc
    if not addresses:
        raise CallbackRefused(f"callbackUrl host {host!r} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise CallbackRefused(
                f"callbackUrl host {host!r} resolves to a non-public address; refused"
            )
    return host, addresses[0]


class CallbackSender:
    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        attempts: int = 3,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._resolver = resolver
        self._attempts = attempts
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, transport=transport)

    def send(self, url: str, body: bytes, secret: str) -> int:
        host, address = check_callback_url(url, self._resolver)
        pinned = httpx.URL(url).copy_with(host=address)
        last = ""
        for attempt in range(1, self._attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "Host": host if not urlsplit(url).port else f"{host}:{urlsplit(url).port}",
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            }
            try:
                response = self._http.post(
                    pinned, content=body, headers=headers, extensions={"sni_hostname": host}
                )
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if response.is_success:
                    return response.status_code
                last = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if attempt < self._attempts:
                self._sleep(2.0**attempt)
        raise CallbackFailed(f"callback to {host} failed: {last}")


class SignedCallbacks:
    """A sender bound to the signing key (read when needed, so a rotated key is picked up)."""

    def __init__(self, sender: CallbackSender, key: Callable[[], str]) -> None:
        self._sender = sender
        self._key = key

    def send(self, url: str, body: bytes) -> int:
        return self._sender.send(url, body, self._key())
