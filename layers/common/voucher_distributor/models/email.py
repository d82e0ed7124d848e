"""E-mail delivery records: one per (batch, row) the pipeline mails, and its history.

The item lives beside the row's assignment in the ledger (``adapters/ledger/deliveries.py``);
its state only moves forward (``domain.email_states``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class EmailState(StrEnum):
    """A row's ``email_status`` (the results CSV, ``status``, the API, the code's record)."""

    #: Waiting to be sent: the batch's ``sendAt`` has not come, or the e-mail is queued but not
    #: yet claimed (a row with a code and no delivery item).
    SCHEDULED = "scheduled"
    #: Claimed for sending; the SES call's outcome is not known (a crash between the call and
    #: its record). Resolved by SES's Send event, never re-sent on its own.
    UNKNOWN = "unknown"
    SENT = "sent"  # SES accepted it
    DELAYED = "delayed"  # SES is still trying (DeliveryDelay)
    DELIVERED = "delivered"  # the receiving server took it
    BOUNCED = "bounced"  # a permanent bounce (SES's diagnostic kept)
    SUPPRESSED = "suppressed"  # on SES's suppression list: SES did not try
    FAILED = "failed"  # SES refused it, the template failed, or the address cannot be sent to
    COMPLAINED = "complained"  # the recipient reported it as spam: never mailed again by accident
    NOT_SENT = "not-sent"  # no code, e-mail off, or opted out


class EmailModel(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class ProgramExam(EmailModel):
    """An exam a program's voucher covers (the program's ``storeExams``): what the e-mail lists."""

    name: str
    code: str = ""


class EmailEventRecord(EmailModel):
    """One step of a row's e-mail history (the ``<name>.deliveries.csv`` lines)."""

    at: int
    state: EmailState
    #: Where the step came from: ``claim``, ``send`` (our SESv2 call), or SES's event type
    #: (``Send``, ``Delivery``, ``Bounce``...).
    source: str
    #: SES's reason or diagnostic (a bounce's diagnostic code, a rejection's message).
    detail: str = ""
    #: The attempt the step belongs to (a resend is a new attempt with a new delivery id).
    delivery_id: str = ""
    #: The EventBridge event's id: an event seen twice is recorded once.
    event_id: str = ""


class EmailDelivery(EmailModel):
    """The e-mail of one batch row: claimed before the SES call, recorded after it."""

    batch_id: str
    row_number: int
    #: The current attempt's id; it rides in the SES message tag ``delivery-id``.
    delivery_id: str
    state: EmailState
    #: SES calls made for the row (one per claim that reached SES; a resend adds one).
    attempts: int = 0
    #: The address the message went to (ASCII, punycode domain); never logged.
    to_address: str = ""
    voucher_code: str = ""
    message_id: str = ""
    reason: str = ""
    claimed_at: int | None = None
    sent_at: int | None = None
    updated_at: int
    history: list[EmailEventRecord] = Field(default_factory=list)
    #: A reminder before the code expires (``ReminderDays``): N days before; None for the
    #: row's first e-mail (and its resends).
    reminder_days: int | None = None

    @property
    def last_event_at(self) -> int:
        return self.history[-1].at if self.history else self.updated_at
