"""Signed callbacks to the URL an HR request named: one attempt at a time (the retries are the
callback queue's, see :mod:`voucher_distributor.pipeline.callbacks`).

Safety: HTTPS only; the host must resolve to public addresses only (no loopback, private,
link-local such as 169.254.169.254, or reserved ranges), and the request is sent to the address
that was checked (pinned, with the original host name for TLS verification), so DNS cannot be
switched between the check and the call. Redirects are not followed. ``allow_loopback`` (the
local runner only, setting ``CALLBACK_ALLOW_LOOPBACK``) also lets ``http://`` and ``https://``
reach loopback addresses, so an integrator can point a local run at a receiver on this machine;
every other address rule stays.

Signatures, both on every attempt:

- ``X-Voucher-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (as before);
- Standard Webhooks: ``webhook-id`` (stable per event), ``webhook-timestamp``,
  ``webhook-signature: v1,<base64>`` with the ``whsec_`` form of the same key
  (:func:`webhook_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from voucher_distributor.domain import standard_webhooks
from voucher_distributor.models.webhook_secret import SECRET_PREFIX

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voucher-Signature"
Resolver = Callable[[str, int], list[str]]


class CallbackRefused(ValueError):
    """The callback URL is not allowed (not HTTPS, or not a public address)."""


class CallbackUnresolvable(CallbackRefused):
    """The callback host does not resolve (now): worth trying again later."""


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


def webhook_secret(key: str) -> str:
    """The ``whsec_`` secret of the signing key: the key itself when it is one already, else
    ``whsec_`` + base64 of its bytes (the same HMAC key X-Voucher-Signature uses)."""
    text = key.strip()
    if text.startswith(SECRET_PREFIX):
        return text
    return SECRET_PREFIX + base64.b64encode(text.encode()).decode()


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_callback_url(
    url: str, resolver: Resolver = system_resolver, *, allow_loopback: bool = False
) -> tuple[str, str]:
    """Return (host, the address to connect to), or raise :class:`CallbackRefused`."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_loopback and parts.scheme == "http"):
        raise CallbackRefused("callbackUrl must use https://")
    host = parts.hostname
    if not host:
        raise CallbackRefused("callbackUrl has no host")
    if parts.username or parts.password:
        raise CallbackRefused("callbackUrl must not carry credentials")
    try:
        addresses = resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise CallbackUnresolvable(f"callbackUrl host {host!r} does not resolve") from exc
    if not addresses:
        raise CallbackUnresolvable(f"callbackUrl host {host!r} does not resolve")
    loopback = []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if allow_loopback and ip.is_loopback:
            loopback.append(address)
            continue
        if not ip.is_global or ip.is_multicast:
            raise CallbackRefused(
                f"callbackUrl host {host!r} resolves to a non-public address; refused"
            )
    if parts.scheme == "http" and len(loopback) != len(addresses):
        raise CallbackRefused("callbackUrl must use https:// (http:// only to loopback, locally)")
    return host, addresses[0]


@dataclass(frozen=True)
class AttemptResult:
    """One POST: the HTTP status, or the name of what went wrong (``refused``, an httpx error)."""

    status: int | str
    latency_ms: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


class CallbackSender:
    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        attempts: int = 3,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        allow_loopback: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._attempts = attempts
        self._sleep = sleep
        self._allow_loopback = allow_loopback
        self._clock = clock
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, transport=transport)

    def attempt(
        self, url: str, body: bytes, secret: str, *, message_id: str | None = None
    ) -> AttemptResult:
        """POST once; never raises for the receiver's or the network's failures."""
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            host, address = check_callback_url(
                url, self._resolver, allow_loopback=self._allow_loopback
            )
        except CallbackUnresolvable as exc:
            return AttemptResult("unresolvable", took(), str(exc))
        except CallbackRefused as exc:
            return AttemptResult("refused", took(), str(exc))
        parts = urlsplit(url)
        pinned = httpx.URL(url).copy_with(host=address)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "Host": host if not parts.port else f"{host}:{parts.port}",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        if message_id is not None:
            headers.update(
                standard_webhooks.headers(webhook_secret(secret), message_id, timestamp, body)
            )
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        try:
            response = self._http.post(pinned, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return AttemptResult(type(exc).__name__, took(), type(exc).__name__)
        return AttemptResult(response.status_code, took(), f"HTTP {response.status_code}")

    def send(self, url: str, body: bytes, secret: str, *, message_id: str | None = None) -> int:
        """Up to ``attempts`` tries within seconds (no outbox): the status, or raise."""
        last = ""
        for attempt in range(1, self._attempts + 1):
            result = self.attempt(url, body, secret, message_id=message_id)
            if result.status in {"refused", "unresolvable"}:
                raise (
                    CallbackUnresolvable if result.status == "unresolvable" else CallbackRefused
                )(result.detail)
            if result.ok:
                return int(result.status)
            last = result.detail
            status = result.status
            if isinstance(status, int) and status < 500 and status != 429:
                break
            if attempt < self._attempts:
                self._sleep(2.0**attempt)
        host = urlsplit(url).hostname
        raise CallbackFailed(f"callback to {host} failed: {last}")


class SignedCallbacks:
    """A sender bound to the signing key (read when needed, so a rotated key is picked up)."""

    def __init__(self, sender: CallbackSender, key: Callable[[], str]) -> None:
        self._sender = sender
        self._key = key

    def send(self, url: str, body: bytes, *, message_id: str | None = None) -> int:
        return self._sender.send(url, body, self._key(), message_id=message_id)

    def attempt(self, url: str, body: bytes, *, message_id: str) -> AttemptResult:
        return self._sender.attempt(url, body, self._key(), message_id=message_id)
