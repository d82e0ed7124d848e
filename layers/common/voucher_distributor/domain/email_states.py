"""The forward-only e-mail state machine, and what SES's events say (pure, no I/O).

States only move forward: an event ranked at or below the row's state is history, not a change.
A complaint outranks everything (the recipient said no); the other final states (bounced,
suppressed, failed, not-sent) share a rank, so the first one wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState

_RANK: dict[EmailState, int] = {
    EmailState.SCHEDULED: 0,
    EmailState.UNKNOWN: 1,
    EmailState.SENT: 2,
    EmailState.DELAYED: 3,
    EmailState.DELIVERED: 4,
    EmailState.BOUNCED: 5,
    EmailState.SUPPRESSED: 5,
    EmailState.FAILED: 5,
    EmailState.NOT_SENT: 5,
    EmailState.COMPLAINED: 6,
}

#: States after which SES has nothing more to say but a complaint (the row has an outcome).
OUTCOMES = frozenset(
    {
        EmailState.DELIVERED,
        EmailState.BOUNCED,
        EmailState.SUPPRESSED,
        EmailState.FAILED,
        EmailState.NOT_SENT,
        EmailState.COMPLAINED,
    }
)
#: States ``local run`` may end on: an outcome, or ``unknown`` (a crash it cannot resolve).
SETTLED = OUTCOMES | {EmailState.UNKNOWN}
#: A row in one of these is mailed again only by an explicit resend (``complained`` needs force).
ALREADY_MAILED = frozenset(set(_RANK) - {EmailState.SCHEDULED})

#: The SES message tag carrying our delivery id (tag names: letters, digits, ``_``, ``-``).
DELIVERY_TAG = "delivery-id"


def rank(state: EmailState) -> int:
    return _RANK[state]


def moves_forward(current: EmailState, new: EmailState) -> bool:
    """True when ``new`` is a step forward from ``current``."""
    return _RANK[new] > _RANK[current]


@dataclass(frozen=True)
class Applied:
    """What an event did to a delivery: the new record, and whether its state changed."""

    delivery: EmailDelivery
    changed: bool
    duplicate: bool = False


def apply_event(delivery: EmailDelivery, event: EmailEventRecord) -> Applied:
    """``delivery`` with ``event`` recorded: duplicates dropped, the state moved forward only.

    An event of an earlier attempt (another delivery id) is kept in the history but does not
    move the current attempt's state.
    """
    if event.event_id and any(h.event_id == event.event_id for h in delivery.history):
        return Applied(delivery, changed=False, duplicate=True)
    history = [*delivery.history, event]
    current_attempt = not event.delivery_id or event.delivery_id == delivery.delivery_id
    if current_attempt and moves_forward(delivery.state, event.state):
        values: dict[str, Any] = {
            "state": event.state,
            "history": history,
            "updated_at": max(delivery.updated_at, event.at),
        }
        if event.detail and event.state in OUTCOMES:
            values["reason"] = event.detail
        return Applied(delivery.model_copy(update=values), changed=True)
    return Applied(delivery.model_copy(update={"history": history}), changed=False, duplicate=False)


# ---------------------------------------------------------------------- SES's events


@dataclass(frozen=True)
class SesEvent:
    """One SES event (EventBridge ``detail``) reduced to what the ledger keeps."""

    event_type: str  # SES's eventType: Send, Delivery, Bounce, ...
    state: EmailState
    message_id: str
    delivery_id: str
    detail: str
    at: int


class NotAnEmailEvent(ValueError):
    """The event is not one of SES's sending events, or carries no message id."""


#: SES event types that say nothing about delivery (tracking, subscriptions): dropped.
IGNORED_EVENT_TYPES = frozenset({"Open", "Click", "Subscription"})
_SUPPRESSED_SUBTYPES = frozenset({"Suppressed", "OnAccountSuppressionList"})


def parse_ses_event(detail: Mapping[str, Any], *, received_at: int) -> SesEvent | None:
    """What ``detail`` (an SES event as EventBridge delivers it) says of one message.

    None for an event type that says nothing about delivery (Open, Click, Subscription).
    Raises :class:`NotAnEmailEvent` for anything that is not an SES sending event.
    """
    if not isinstance(detail, Mapping):
        raise NotAnEmailEvent("the event's detail is not an object")
    event_type = detail.get("eventType") or detail.get("notificationType")
    if not isinstance(event_type, str) or not event_type:
        raise NotAnEmailEvent("the event has no eventType")
    if event_type in IGNORED_EVENT_TYPES:
        return None
    mail = detail.get("mail")
    if not isinstance(mail, Mapping):
        raise NotAnEmailEvent(f"{event_type} event has no mail object")
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise NotAnEmailEvent(f"{event_type} event has no messageId")
    state, why = _state_of(event_type, detail)
    return SesEvent(
        event_type=event_type,
        state=state,
        message_id=message_id,
        delivery_id=_delivery_id(mail),
        detail=why[:500],
        at=_event_time(detail, event_type, mail, received_at),
    )


def _state_of(event_type: str, detail: Mapping[str, Any]) -> tuple[EmailState, str]:  # noqa: PLR0911
    body = _section(detail, event_type)
    if event_type == "Send":
        return EmailState.SENT, ""
    if event_type == "Delivery":
        return EmailState.DELIVERED, ""
    if event_type == "DeliveryDelay":
        return EmailState.DELAYED, _text(body.get("delayType"))
    if event_type == "Bounce":
        kind = _text(body.get("bounceType"))
        subtype = _text(body.get("bounceSubType"))
        diagnostic = _diagnostic(body)
        why = "; ".join(part for part in (f"{kind}/{subtype}".strip("/"), diagnostic) if part)
        if subtype in _SUPPRESSED_SUBTYPES:
            return EmailState.SUPPRESSED, why
        if kind == "Permanent":
            return EmailState.BOUNCED, why
        # Transient (or Undetermined): SES retried and gave up; not a hard bounce.
        return EmailState.FAILED, f"soft bounce, SES gave up: {why}"
    if event_type == "Complaint":
        return EmailState.COMPLAINED, _text(body.get("complaintFeedbackType"))
    if event_type == "Reject":
        return EmailState.FAILED, f"SES rejected it: {_text(body.get('reason'))}"
    if event_type in {"Rendering Failure", "RenderingFailure"}:
        return EmailState.FAILED, f"SES could not render it: {_text(body.get('errorMessage'))}"
    raise NotAnEmailEvent(f"unknown SES event type {event_type!r}")


_SECTIONS = {
    "Send": "send",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Reject": "reject",
    "Rendering Failure": "failure",
    "RenderingFailure": "failure",
}


def _section(detail: Mapping[str, Any], event_type: str) -> Mapping[str, Any]:
    body = detail.get(_SECTIONS.get(event_type, ""))
    return body if isinstance(body, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _diagnostic(bounce: Mapping[str, Any]) -> str:
    recipients = bounce.get("bouncedRecipients")
    if isinstance(recipients, list):
        for recipient in recipients:
            if isinstance(recipient, Mapping) and isinstance(recipient.get("diagnosticCode"), str):
                return str(recipient["diagnosticCode"])
    return ""


def _delivery_id(mail: Mapping[str, Any]) -> str:
    tags = mail.get("tags")
    if isinstance(tags, Mapping):
        values = tags.get(DELIVERY_TAG)
        if isinstance(values, list) and values and isinstance(values[0], str):
            return values[0]
        if isinstance(values, str):
            return values
    return ""


def _event_time(
    detail: Mapping[str, Any], event_type: str, mail: Mapping[str, Any], received_at: int
) -> int:
    for raw in (_section(detail, event_type).get("timestamp"), mail.get("timestamp")):
        if isinstance(raw, str):
            try:
                return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())
            except ValueError:
                continue
    return received_at
