"""A chunk's e-mails a slice at a time: claimed in one transaction, sent, recorded in one.

Per row the protocol is :func:`voucher_distributor.pipeline.email._send_one`'s, in fewer round
trips: every row of a slice is claimed (conditional puts, one ``TransactWriteItems``) before
any of its SES calls, each row gets one SESv2 ``SendEmail`` paced to the send rate, and the
sends SES took are recorded together after the slice (one ``TransactWriteItems`` of the same
conditional updates as :meth:`DeliveryStore.record_sent`).

- A row claimed or mailed already is not in the slice's claims: a redelivered message sends
  nothing twice.
- Throttled, paused or unreachable: SES surely did not send the refused row, nor the rows after
  it; their claims are given back (the rest of the chunk goes on in a message of its own), and
  the rows sent before are recorded.
- An error inside the slice that is not SES's answer leaves the row whose call raised it
  ``unknown`` (the call may have gone out), gives back the claims of the rows after it (their
  calls surely did not) and records those sent before.
- A crash that runs no code at all (the process killed) leaves every claimed row of the slice
  ``unknown``, those sent and those not yet: none is re-sent on its own (the claim stays); SES's
  Send event resolves those it took. The slice is sized to about a second of sending
  (:func:`slice_size`), which bounds that window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from voucher_distributor.adapters.ledger.deliveries import MAX_SLICE, SliceClaim
from voucher_distributor.adapters.ses import (
    SesNotSent,
    SesOutcomeUnknown,
    SesRejected,
)
from voucher_distributor.domain.email_message import (
    AddressNotSendable,
    EmailRenderError,
    RenderedEmail,
    Sender,
    build_mime,
    ses_address,
)
from voucher_distributor.models.email import EmailDelivery, EmailState
from voucher_distributor.models.ledger import AssignmentRecord
from voucher_distributor.pipeline.context import Services, log


class SliceStopped(Exception):
    """SES refused a row for now (throttled, paused, unreachable): the chunk goes on from
    ``from_row``, a row SES surely did not send."""

    def __init__(self, cause: SesNotSent, from_row: int):
        super().__init__(str(cause))
        self.cause = cause
        self.from_row = from_row


def slice_size(rate: float) -> int:
    """Rows a slice: about a second of sending at ``rate`` a second, 1 to :data:`MAX_SLICE`."""
    if rate <= 0:
        return MAX_SLICE
    return max(1, min(MAX_SLICE, int(rate)))


def record_unmade(
    services: Services, record: AssignmentRecord, exc: Exception, *, now: int
) -> None:
    """The row's e-mail could not be made (an address SES cannot send to, a template that does
    not render): the row is ``failed``, with why."""
    services.ledger.deliveries.put_outcome(
        record.batch_id,
        record.row_number,
        state=EmailState.FAILED,
        reason=str(exc),
        now=now,
        voucher_code=record.voucher_code,
    )
    services.metrics.count("EmailsFailed")


@dataclass(frozen=True)
class _Ready:
    record: AssignmentRecord
    to: str
    rendered: RenderedEmail


def send_slice(
    services: Services,
    records: Sequence[AssignmentRecord],
    sender: Sender,
    wait: Callable[[], None],
    render_one: Callable[[AssignmentRecord], RenderedEmail],
) -> Counter[str]:
    """Send one slice's e-mails (rows in order); the counts by outcome.

    ``wait``: the pacer's, before each SES call; ``render_one``: a record's e-mail (raises
    :class:`EmailRenderError`). :class:`SliceStopped` when SES refuses a row for now.
    """
    deliveries = services.ledger.deliveries
    counts: Counter[str] = Counter()
    now = services.now()
    ready: list[_Ready] = []
    for record in records:
        try:
            ready.append(_Ready(record, ses_address(record.email), render_one(record)))
        except (AddressNotSendable, EmailRenderError) as exc:
            record_unmade(services, record, exc, now=now)
            counts["failed"] += 1
    claimed = deliveries.claim_slice(
        [SliceClaim(r.record.batch_id, r.record.row_number, r.to, r.record.voucher_code)
         for r in ready],
        now=now,
    )  # fmt: skip
    counts["already"] += len(ready) - len(claimed)
    by_row = {r.record.row_number: r for r in ready}
    sent: list[tuple[EmailDelivery, str]] = []
    from_address = ses_address(sender.email)
    assert services.ses is not None
    try:
        for i, claim in enumerate(claimed):
            row = by_row[claim.row_number]
            raw = build_mime(row.rendered, sender=sender, to=row.to, sent_at=now)
            wait()
            try:
                got = services.ses.send(
                    raw, from_address=from_address, to_address=row.to,
                    delivery_id=claim.delivery_id,
                )  # fmt: skip
            except SesNotSent as exc:
                for unsent in claimed[i:]:  # SES sent none of these: their claims go back
                    deliveries.release(unsent)
                raise SliceStopped(exc, claim.row_number) from exc
            except SesRejected as exc:
                deliveries.record_failed(claim, reason=str(exc), now=services.now())
                services.metrics.count("EmailsFailed")
                counts["failed"] += 1
                continue
            except SesOutcomeUnknown as exc:
                deliveries.record_unknown(claim, reason=str(exc), now=services.now())
                services.metrics.count("EmailsUnknown")
                log.warning("row %s/%d: %s", claim.batch_id, claim.row_number, exc)
                counts["unknown"] += 1
                continue
            except Exception:
                # Not an answer from SES (a bug, the process going down): this row's call may
                # have gone out, so it stays unknown; the rows after it surely did not.
                for unsent in claimed[i + 1 :]:
                    deliveries.release(unsent)
                raise
            sent.append((claim, got.message_id))
    finally:
        if sent:
            deliveries.record_sent_slice(sent, now=services.now())
            services.metrics.count("EmailsSent", len(sent))
            counts["sent"] += len(sent)
    return counts
