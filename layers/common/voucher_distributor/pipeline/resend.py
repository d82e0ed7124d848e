"""Mail a row's *same* code again (``resend``, ``POST /v1/distributions/{id}/resend``).

:func:`ask_resends` (the CLI's and the API's use case) picks the rows (``--row``, ``--email`` or
``--status``), checks each one (it has a code; ``complained`` only with ``force``; nobody mailed
again within :data:`RESEND_INTERVAL_SECONDS`), records the ask with who and when
(``ledger.resends``: one transaction that also moves the holding to the corrected address of
``--to``), and puts one message per row on the e-mail queue.

:func:`send_resend` (the sending function, on that message) goes the same claimed-send path as
the first e-mail: a new claim on the row's delivery item, conditional on the attempt the ask
saw (a repeated message sends nothing), one SESv2 call, the record; throttling and pauses put
the message back with a delay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.ledger.resends import (
    AddressHoldsProgram,
    AddressMove,
    HoldingChanged,
    ResendTooSoon,
)
from voucher_distributor.adapters.ses import SesSendingStopped, SesThrottled, SesUnavailable
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.email_message import AddressNotSendable, ses_address
from voucher_distributor.domain.emails import is_valid_email, normalise_email
from voucher_distributor.domain.outcomes import outcomes_file
from voucher_distributor.models.email import EmailDelivery, EmailState
from voucher_distributor.models.ledger import AssignmentRecord, ChunkState
from voucher_distributor.models.resend import ResendMessage, ResendSelection
from voucher_distributor.pipeline.context import Services, log
from voucher_distributor.pipeline.email import (
    UNAVAILABLE_RETRY_SECONDS,
    Pacer,
    _send_one,
    sender_of,
    worker_send_rate,
)

#: A person is not mailed again within this many seconds of the last e-mail (or ask).
RESEND_INTERVAL_SECONDS = 60


class ResendError(ValueError):
    """The resend cannot be asked as given (the message says what to change)."""


class BatchNotFound(ResendError):
    """No such batch."""


@dataclass(frozen=True)
class Asked:
    row: int
    to: str
    #: The address the code moved from (``--to``), else "".
    moved_from: str
    #: The row's e-mail state before the ask ("" for a row never mailed).
    was: str


@dataclass
class ResendReport:
    batch_id: str
    asked: list[Asked] = field(default_factory=list)
    #: (row, why not), for the rows picked that are not mailed again.
    refused: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batchId": self.batch_id,
            "asked": [
                {"row": a.row, "to": a.to, "was": a.was or None}
                | ({"movedFrom": a.moved_from} if a.moved_from else {})
                for a in self.asked
            ],
            "refused": [{"row": row, "reason": why} for row, why in self.refused],
        }


def _picked(
    ledger: Ledger, batch_id: str, selection: ResendSelection
) -> list[tuple[AssignmentRecord, EmailDelivery | None]]:
    """The rows the selection names, each with its delivery item (reads by the batch's key,
    or the by-email index; never a scan)."""
    if selection.row is not None:
        keys = [(batch_id, selection.row)]
    elif selection.email is not None:
        wanted = normalise_email(selection.email)
        keys = [
            (r.batch_id, r.row_number)
            for r in ledger.assignments.assignments_for_email(wanted)
            if r.batch_id == batch_id
        ]
    else:
        state = EmailState(selection.status or "")
        keys = [
            (batch_id, d.row_number)
            for d in ledger.deliveries.for_batch(batch_id)
            if d.state == state
        ]
    records = ledger.assignments.get_assignments(keys)
    deliveries = ledger.deliveries.get_many(keys)
    return [(records[k], deliveries.get(k)) for k in keys if k in records]


def check_selection(selection: ResendSelection) -> None:
    given = [n for n in ("row", "email", "status") if getattr(selection, n) is not None]
    if len(given) != 1:
        raise ResendError("name the rows to resend with exactly one of row, email or status")
    if selection.status is not None:
        states = {s.value for s in EmailState}
        if selection.status not in states:
            raise ResendError(
                f"no e-mail state {selection.status!r}: one of {', '.join(sorted(states))}"
            )
    if selection.to is not None and selection.status is not None:
        raise ResendError("a new address (to) corrects one row: name it by row or email")


def _new_address(raw: str) -> str:
    address = normalise_email(raw)
    if not is_valid_email(address):
        raise ResendError(f"{raw!r} is not an e-mail address")
    try:
        ses_address(address)
    except AddressNotSendable as exc:
        raise ResendError(str(exc)) from exc
    return address


def ask_resends(
    ledger: Ledger,
    send: Callable[[dict[str, Any]], None],
    batch_id: str,
    selection: ResendSelection,
    *,
    by: str,
    now: int,
    email_enabled: bool,
) -> ResendReport:
    """Ask for the selected rows' codes to be mailed again; what was asked and refused.

    ``send`` puts one message on the e-mail queue. Raises :class:`ResendError` for an ask
    that cannot go as given (no such batch, a stack that sends no e-mail, a bad address).
    """
    check_selection(selection)
    if not email_enabled:
        raise ResendError("this stack sends no e-mail: deploy it with SenderEmail set")
    batch = ledger.batches.get_batch(batch_id)
    if batch is None:
        raise BatchNotFound(f"no batch {batch_id}")
    if batch.dry_run:
        raise ResendError(f"batch {batch_id} is a dry run: it gave out no codes to mail")
    new = _new_address(selection.to) if selection.to is not None else None
    picked = _picked(ledger, batch_id, selection)
    if new is not None and len(picked) > 1:
        raise ResendError(
            f"{len(picked)} rows have that address: name the one to correct with its row"
        )
    report = ResendReport(batch_id)
    if not picked:
        report.refused.append((selection.row or 0, _nothing_picked(selection)))
    for record, delivery in picked:
        why = _refusal(record, delivery, force=selection.force, now=now, new=new)
        if why:
            report.refused.append((record.row_number, why))
            continue
        move = (
            AddressMove(record.email, new, record.partner_name, record.program_name)
            if new is not None
            else None
        )
        to = new or record.email
        try:
            ledger.resends.take(
                batch_id, record.row_number, now=now, by=by, to_address=to,
                min_interval=RESEND_INTERVAL_SECONDS, move=move,
            )  # fmt: skip
        except ResendTooSoon:
            report.refused.append((record.row_number, _too_soon(RESEND_INTERVAL_SECONDS)))
            continue
        except HoldingChanged:
            report.refused.append(
                (record.row_number, f"{record.email} no longer holds this row's code")
            )
            continue
        except AddressHoldsProgram:
            report.refused.append(
                (record.row_number, f"{new} already holds a voucher of {record.program_name}")
            )
            continue
        message = ResendMessage(
            batch_id=batch_id,
            resend_row=record.row_number,
            chunk_no=record.chunk_no,
            to=to,
            replacing=delivery.delivery_id if delivery is not None else "",
        )
        send(message.model_dump(by_alias=True))
        report.asked.append(
            Asked(
                record.row_number,
                to,
                record.email if move else "",
                delivery.state.value if delivery else "",
            )
        )
    return report


def _nothing_picked(selection: ResendSelection) -> str:
    if selection.row is not None:
        return f"no row {selection.row} with a code in this batch"
    if selection.email is not None:
        return "no row of this batch has that address"
    return f"no row of this batch is {selection.status}"


def _too_soon(seconds: int) -> str:
    return f"mailed or asked less than {seconds} s ago: try again in a minute"


def _refusal(
    record: AssignmentRecord,
    delivery: EmailDelivery | None,
    *,
    force: bool,
    now: int,
    new: str | None,
) -> str:
    if record.status != "assigned" or not record.voucher_code:
        return f"row {record.row_number} has no code ({record.status}): nothing to mail"
    if delivery is not None and delivery.state == EmailState.COMPLAINED and not force:
        return (
            "the recipient reported the e-mail as spam (complained): it is never mailed again "
            "by accident; --force (API: force) if they asked for it"
        )
    if (
        delivery is not None
        and delivery.claimed_at
        and now - delivery.claimed_at < RESEND_INTERVAL_SECONDS
    ):
        return _too_soon(RESEND_INTERVAL_SECONDS)
    if new is not None and new == record.email:
        return f"row {record.row_number} already has that address"
    return ""


# ---------------------------------------------------------------------- the sending function


def send_resend(  # noqa: PLR0911 - one exit per way a resend ends
    services: Services, message: ResendMessage
) -> str:
    """Send one asked resend (the e-mail queue's message); what happened, for the log."""
    settings = services.settings
    if not settings.email_enabled or services.ses is None:
        return "email-off"
    deliveries = services.ledger.deliveries
    current = deliveries.get(message.batch_id, message.resend_row)
    if (current.delivery_id if current is not None else "") != message.replacing:
        return "stale"  # sent already for this ask (a repeated message), or asked again since
    chunk = services.ledger.chunks.get_chunk(message.batch_id, message.chunk_no)
    key = (message.batch_id, message.resend_row)
    record = services.ledger.assignments.get_assignments([key]).get(key)
    if chunk is None or record is None or not record.voucher_code:
        return "no-code"
    record = _with_names(services, chunk.state, record).model_copy(update={"email": message.to})
    pacer = Pacer(worker_send_rate(services), services.clock, services.sleep)
    try:
        outcome = _send_one(services, chunk, record, sender_of(services), pacer, replacing=current)
    except SesThrottled as exc:
        return _later(services, message, exc.retry_after, "throttled")
    except SesSendingStopped:
        services.metrics.count("EmailSendingPaused")
        return _later(services, message, settings.email_paused_retry_seconds, "paused")
    except SesUnavailable:
        return _later(services, message, UNAVAILABLE_RETRY_SECONDS, "unavailable")
    # The results are rewritten when SES's events for this e-mail arrive (the events function).
    log.info("resend of row %s/%d: %s", message.batch_id, message.resend_row, outcome)
    return outcome


def _with_names(
    services: Services, state: ChunkState, record: AssignmentRecord
) -> AssignmentRecord:
    """The row as its chunk's outcomes file has it (names, expiry); the ledger's without."""
    outcomes = work_key(record.batch_id, outcomes_file(record.chunk_no, state))
    for row in services.storage.read_records(outcomes, AssignmentRecord):
        if row.row_number == record.row_number:
            return row
    return record


def _later(services: Services, message: ResendMessage, delay: int, why: str) -> str:
    services.queues.send(
        services.settings.email_queue_url, message.model_dump(by_alias=True), delay_seconds=delay
    )
    return why
