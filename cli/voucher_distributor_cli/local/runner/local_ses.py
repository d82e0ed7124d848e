"""SES as a local run sees it: moto's SESv2 plus what moto lacks.

moto's SESv2 takes ``SendEmail`` (Simple or Raw) and keeps the message, but it has no send-rate
limit, no ``GetAccount`` and publishes no events. Here, in the moto server's process (ours):

- **A send-rate limit**: a token bucket of ``max_send_rate`` per second (a second's worth of
  burst) answers ``TooManyRequestsException`` above it, as SES does, so pacing can be tested.
- **GetAccount** answers the same ``MaxSendRate`` (what the template's ``MaxSendRate = 0`` reads).
- **Every accepted message is recorded** (its id, tags, configuration set, destination and raw
  bytes) and, with a ``mail_dir``, written there as one ``.eml`` file.
- **SES's events**: :meth:`LocalSes.drain` turns each recorded send into the EventBridge events
  SES would publish through the configuration set's destination, following the mailbox
  simulator: ``success@simulator.amazonses.com`` delivered, ``bounce@`` bounced (permanent),
  ``complaint@`` delivered then complained, ``suppressionlist@`` suppressed (SES's account-level
  list), ``ooto@`` delivered (the auto-reply is not an event); any other address delivered.

One instance is active per process (:func:`activate`); the patch stays, doing nothing more than
moto when none is.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SIMULATOR_DOMAIN = "simulator.amazonses.com"
DELIVERY_TAG = "delivery-id"  # voucher_distributor.domain.email_states.DELIVERY_TAG

_lock = threading.Lock()
_active: LocalSes | None = None
_patched = False


@dataclass(frozen=True)
class SentMail:
    """One message local SES accepted."""

    message_id: str
    source: str
    to: tuple[str, ...]
    tags: dict[str, str]
    configuration_set: str
    raw: bytes
    at: float
    eml: Path | None = None


@dataclass
class _Bucket:
    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        capacity = max(1.0, self.rate)
        self.tokens = min(capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class LocalSes:
    """The local SES of one run (see the module docstring)."""

    max_send_rate: float = 50.0
    mail_dir: Path | None = None
    region: str = "us-east-1"
    account_id: str = "123456789012"
    clock: Callable[[], float] = time.monotonic
    sent: list[SentMail] = field(default_factory=list)
    throttled: int = 0
    #: Faults a test sets: sending paused (``SendingPausedException`` for every send), and
    #: addresses SES refuses (``MessageRejected``).
    paused: bool = False
    rejects: set[str] = field(default_factory=set)
    refused: int = 0
    _drained: int = 0
    _bucket: _Bucket | None = None

    def __post_init__(self) -> None:
        self._bucket = _Bucket(self.max_send_rate, max(1.0, self.max_send_rate), self.clock())
        if self.mail_dir is not None:
            self.mail_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ in the moto server

    def admit(self) -> bool:
        """One send under the rate limit? (False: answer TooManyRequestsException)."""
        assert self._bucket is not None
        with _lock:
            if self._bucket.take(self.clock()):
                return True
            self.throttled += 1
            return False

    def record(self, request: dict[str, Any], message_id: str) -> SentMail:
        content = request.get("Content") or {}
        raw = (
            base64.b64decode(content["Raw"]["Data"])
            if "Raw" in content
            else json.dumps(content).encode()
        )
        destination = request.get("Destination") or {}
        to = tuple(destination.get("ToAddresses") or ())
        tags = {str(t["Name"]): str(t["Value"]) for t in request.get("EmailTags") or []}
        with _lock:
            eml = None
            if self.mail_dir is not None:
                eml = self.mail_dir / f"{len(self.sent) + 1:06d}-{_safe(message_id)}.eml"
                eml.write_bytes(raw)
            mail = SentMail(
                message_id=message_id,
                source=str(request.get("FromEmailAddress", "")),
                to=to,
                tags=tags,
                configuration_set=str(request.get("ConfigurationSetName", "")),
                raw=raw,
                at=time.time(),
                eml=eml,
            )
            self.sent.append(mail)
        return mail

    # ------------------------------------------------------------------ SES's events

    def pending(self) -> int:
        """Sends whose events have not been drained yet."""
        with _lock:
            return len(self.sent) - self._drained

    def drain(self) -> list[dict[str, Any]]:
        """The EventBridge events of every send since the last drain, in order."""
        with _lock:
            new = self.sent[self._drained :]
            self._drained = len(self.sent)
        events: list[dict[str, Any]] = []
        for mail in new:
            events.extend(self.events_of(mail))
        return events

    def events_of(self, mail: SentMail) -> list[dict[str, Any]]:
        """What SES would publish for ``mail`` (the mailbox simulator's outcomes)."""
        to = mail.to[0] if mail.to else ""
        local, _, domain = to.lower().partition("@")
        mailbox = local.split("+", 1)[0] if domain == SIMULATOR_DOMAIN else ""
        steps: list[tuple[str, str, dict[str, Any]]] = [("Send", "send", {})]
        if mailbox == "bounce":
            steps.append(
                ("Bounce", "bounce", _bounce(to, "General", "smtp; 550 5.1.1 user unknown"))
            )
        elif mailbox == "suppressionlist":
            steps.append(
                (
                    "Bounce",
                    "bounce",
                    _bounce(
                        to,
                        "OnAccountSuppressionList",
                        "Amazon SES did not send the message to this address because it is on "
                        "the suppression list for your account.",
                    ),
                )
            )
        elif mailbox == "complaint":
            steps.append(("Delivery", "delivery", _delivery(to)))
            steps.append(
                (
                    "Complaint",
                    "complaint",
                    {
                        "complainedRecipients": [{"emailAddress": to}],
                        "complaintFeedbackType": "abuse",
                        "timestamp": _now(),
                    },
                )
            )
        else:  # success@, ooto@ (its auto-reply is not an event), and any other address
            steps.append(("Delivery", "delivery", _delivery(to)))
        return [self._event(mail, kind, section, body) for kind, section, body in steps]

    def _event(
        self, mail: SentMail, kind: str, section: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        tags = {name: [value] for name, value in mail.tags.items()}
        if mail.configuration_set:
            tags["ses:configuration-set"] = [mail.configuration_set]
        detail = {
            "eventType": kind,
            "mail": {
                "timestamp": datetime.fromtimestamp(mail.at, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "source": mail.source,
                "sourceArn": f"arn:aws:ses:{self.region}:{self.account_id}:identity/{mail.source}",
                "sendingAccountId": self.account_id,
                "messageId": mail.message_id,
                "destination": list(mail.to),
                "tags": tags,
            },
            section: body,
        }
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": _DETAIL_TYPES[kind],
            "source": "aws.ses",
            "account": self.account_id,
            "time": _now(),
            "region": self.region,
            "resources": [
                f"arn:aws:ses:{self.region}:{self.account_id}:configuration-set/"
                f"{mail.configuration_set}"
            ],
            "detail": detail,
        }


_DETAIL_TYPES = {
    "Send": "Email Sent",
    "Delivery": "Email Delivered",
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _delivery(to: str) -> dict[str, Any]:
    return {
        "timestamp": _now(),
        "processingTimeMillis": 120,
        "recipients": [to],
        "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "a8-50.smtp-out.amazonses.com",
    }


def _bounce(to: str, subtype: str, diagnostic: str) -> dict[str, Any]:
    return {
        "bounceType": "Permanent",
        "bounceSubType": subtype,
        "bouncedRecipients": [
            {
                "emailAddress": to,
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": diagnostic,
            }
        ],
        "timestamp": _now(),
        "reportingMTA": "dns; amazonses.com",
    }


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80]


# ---------------------------------------------------------------------- the moto patch


def activate(ses: LocalSes | None) -> None:
    """Make ``ses`` the process's local SES (None: plain moto again)."""
    global _active  # noqa: PLW0603 - one local SES per process, like moto's state
    _patch()
    _active = ses


def active() -> LocalSes | None:
    return _active


def _patch() -> None:
    global _patched  # noqa: PLW0603 - patch once per process
    if _patched:
        return
    from moto.core.exceptions import JsonRESTError  # noqa: PLC0415
    from moto.sesv2.responses import SESV2Response  # noqa: PLC0415

    original = SESV2Response.send_email

    class TooManyRequests(JsonRESTError):
        code = 429

        def __init__(self) -> None:
            super().__init__("TooManyRequestsException", "Maximum sending rate exceeded.")

    class Refused(JsonRESTError):
        code = 400

    def send_email(self: Any) -> str:
        ses = _active
        if ses is not None and ses.paused:
            ses.refused += 1
            raise Refused("SendingPausedException", "Sending is paused for this account.")
        if ses is not None:
            to = (json.loads(self.body).get("Destination") or {}).get("ToAddresses") or []
            if set(to) & ses.rejects:
                ses.refused += 1
                raise Refused("MessageRejected", "Email address is on the account's block list.")
        if ses is not None and not ses.admit():
            raise TooManyRequests()
        answer = original(self)
        if ses is not None:
            ses.record(json.loads(self.body), str(json.loads(answer)["MessageId"]))
        return answer

    def get_account(self: Any) -> str:  # noqa: ARG001 - moto's handler signature
        rate = _active.max_send_rate if _active is not None else 1.0
        return json.dumps(
            {
                "SendQuota": {
                    "Max24HourSend": 50_000.0,
                    "MaxSendRate": rate,
                    "SentLast24Hours": float(len(_active.sent) if _active else 0),
                },
                "SendingEnabled": True,
                "ProductionAccessEnabled": True,
                "EnforcementStatus": "HEALTHY",
            }
        )

    SESV2Response.send_email = send_email  # type: ignore[method-assign]
    SESV2Response.get_account = get_account  # type: ignore[attr-defined]
    # moto routes no GetAccount (GET /v2/email/account); before its server's first SESv2 call.
    from moto.sesv2 import urls  # noqa: PLC0415

    urls.url_paths.setdefault("{0}/v2/email/account$", SESV2Response.dispatch)
    _patched = True
