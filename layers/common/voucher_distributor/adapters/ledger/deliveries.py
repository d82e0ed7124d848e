"""The ledger's e-mail delivery records: one item per (batch, row) the pipeline mails.

Key: ``pk = B#<batch>``, ``sk = E#<row:09>`` (beside the row's assignment ``R#<row:09>``), so a
batch's deliveries are one Query in row order. Attributes: ``email_state``, ``delivery_id`` (the
current attempt: ``<batch>.<row>.<attempt>``, also the SES message tag, so an SES event finds
its item by key, no index and no scan), ``attempts``, ``to_address``, ``mailed_code`` (the
code: not ``voucher_code``, the ``by-code`` index's key; nor ``email``, ``by-email``'s),
``email_state`` (not ``state``, ``chunks-by-state``'s key),
``message_id``, ``reason``, ``claimed_at``, ``sent_at``, ``updated_at``, ``version`` (each
event's write is conditional on it) and ``history`` (every step, as a list of maps).

Never a second e-mail by accident: :meth:`DeliveryStore.claim` is a conditional put before the
SES call (the item exists in state ``unknown``); :meth:`record_sent` / :meth:`record_failed` are
conditional on that same attempt after it; :meth:`release` gives a claim back only when SES
surely sent nothing (throttled, paused). A resend (a later issue) is a new claim on the same
item: ``claim(..., replacing=current)``.

A reminder before the code expires (``ReminderDays``) is an item of its own beside the row's
first e-mail: ``sk = E#<row:09>#R<days:03>``, one per (code, N), claimed the same way; its
claim is one transaction with a check that the person still holds the code (their holding
``H#`` still points at this row). Its delivery id is ``<batch>.<row>.r<days>.<attempt>``.
:meth:`DeliveryStore.for_batch` leaves reminders out (a row's state is its first e-mail's);
:meth:`DeliveryStore.reminders_for_batch` and :meth:`reminders_for_row` read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.delivery_items import (
    MAX_SLICE,
    STATE_ATTRIBUTE,
    NoLongerHeld,
    SliceClaim,
    adds_nothing,
    claim_item,
    delivery_id,
    email_sk,
    event_step,
    item_of,
    parse_delivery_id,
    parse_reminder_id,
    record_of,
)
from voucher_distributor.adapters.ledger.table import (
    BATCH_SK,
    Store,
    back_off_on_conflict,
    batch_pk,
    cancellation_reasons,
    conditional_failed,
    plain,
)
from voucher_distributor.domain.email_states import apply_event
from voucher_distributor.models.email import EmailDelivery, EmailEventRecord, EmailState
from voucher_distributor.models.ledger import BatchRecord

__all__ = [
    "MAX_SLICE",
    "DeliveryStore",
    "NoLongerHeld",
    "SliceClaim",
    "delivery_id",
    "email_sk",
    "parse_delivery_id",
    "parse_reminder_id",
]

_MAX_EVENT_RETRIES = 8


class DeliveryStore(Store):
    """E-mail deliveries (``ledger.deliveries``)."""

    def _key(
        self, batch_id: str, row_number: int, reminder_days: int | None = None
    ) -> dict[str, str]:
        return {"pk": batch_pk(batch_id), "sk": email_sk(row_number, reminder_days)}

    def _key_of(self, delivery: EmailDelivery) -> dict[str, str]:
        return self._key(delivery.batch_id, delivery.row_number, delivery.reminder_days)

    # ------------------------------------------------------------------ reads

    def get(
        self, batch_id: str, row_number: int, reminder_days: int | None = None
    ) -> EmailDelivery | None:
        got = self._table.get_item(
            Key=self._key(batch_id, row_number, reminder_days), ConsistentRead=True
        )
        return record_of(got["Item"]) if "Item" in got else None

    def for_batch(self, batch_id: str) -> Iterator[EmailDelivery]:
        """A batch's first e-mails in row order (one Query, page after page; no reminders)."""
        for item in self._query_prefix(batch_id, "E#"):
            if "#R" not in str(item["sk"]):
                yield record_of(item)

    def reminders_for_batch(self, batch_id: str) -> Iterator[EmailDelivery]:
        """A batch's reminders in row order (the same Query, the other items)."""
        for item in self._query_prefix(batch_id, "E#"):
            if "#R" in str(item["sk"]):
                yield record_of(item)

    def reminders_for_row(self, batch_id: str, row_number: int) -> list[EmailDelivery]:
        return [record_of(i) for i in self._query_prefix(batch_id, f"{email_sk(row_number)}#R")]

    def states(self, batch_id: str) -> Iterator[tuple[int, EmailState]]:
        """A batch's (row, e-mail state) pairs in row order: the same Query as
        :meth:`for_batch`, projected to the key and the state (pages a few kB, not the
        history: the results' ``email_status`` column and the counts need nothing more)."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": batch_pk(batch_id), ":prefix": "E#"},
            "ProjectionExpression": "sk, #s",
            "ExpressionAttributeNames": {"#s": STATE_ATTRIBUTE},
            "ConsistentRead": True,
        }
        for item in self._pages(self._table.query, **kwargs):
            sk = str(item["sk"])
            if "#R" in sk:
                continue  # a reminder (E#<row>#R<N>): not the row's first e-mail, as for_batch
            yield int(sk.removeprefix("E#")), EmailState(str(item[STATE_ATTRIBUTE]))

    def get_with_batch(
        self, batch_id: str, row_number: int
    ) -> tuple[BatchRecord | None, EmailDelivery | None]:
        """The batch and one row's e-mail in one read (a code's record: ``voucher CODE``)."""
        batch, delivery, _ = self.get_record_items(batch_id, row_number)
        return batch, delivery

    def get_record_items(
        self, batch_id: str, row_number: int, reminder_days: tuple[int, ...] = ()
    ) -> tuple[BatchRecord | None, EmailDelivery | None, list[EmailDelivery]]:
        """The batch, one row's e-mail and its reminders of ``reminder_days``, in one read."""
        keys = [{"pk": batch_pk(batch_id), "sk": BATCH_SK}, self._key(batch_id, row_number)]
        keys += [self._key(batch_id, row_number, days) for days in dict.fromkeys(reminder_days)]
        reminders: list[EmailDelivery] = []
        request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        batch: BatchRecord | None = None
        delivery: EmailDelivery | None = None
        while request:
            got = self._client.batch_get_item(RequestItems=request)
            for item in got["Responses"].get(self.table_name, []):
                if item["sk"] == BATCH_SK:
                    batch = BatchRecord.model_validate(plain(item))
                elif "#R" in str(item["sk"]):
                    reminders.append(record_of(item))
                else:
                    delivery = record_of(item)
            request = got.get("UnprocessedKeys") or {}
        return batch, delivery, reminders

    def get_many(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], EmailDelivery]:
        """Deliveries by (batch, row), 100 keys a request; rows never mailed are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], EmailDelivery] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [self._key(b, r) for b, r in wanted[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                got = self._client.batch_get_item(RequestItems=request)
                for item in got["Responses"].get(self.table_name, []):
                    record = record_of(item)
                    found[(record.batch_id, record.row_number)] = record
                request = got.get("UnprocessedKeys") or {}
        return found

    # ------------------------------------------------------------------ the send protocol

    def claim(
        self,
        batch_id: str,
        row_number: int,
        *,
        to_address: str,
        voucher_code: str,
        now: int,
        replacing: EmailDelivery | None = None,
        reminder_days: int | None = None,
        holding: tuple[str, str] | None = None,
    ) -> EmailDelivery | None:
        """Claim the row's next send; None when it is claimed or mailed already.

        The first claim needs the item absent; a resend's (``replacing``) needs the item still
        at the attempt it saw. The claimed item is ``unknown`` until the SES call is recorded.
        ``reminder_days``: the row's N-day reminder instead; ``holding`` (holding ``pk``, ``sk``):
        the claim also needs that holding to point at this row, else :class:`NoLongerHeld`.
        """
        claimed, item = claim_item(
            SliceClaim(batch_id, row_number, to_address, voucher_code),
            now=now,
            replacing=replacing,
            reminder_days=reminder_days,
        )
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if replacing is None
            else {
                "ConditionExpression": "delivery_id = :seen",
                "ExpressionAttributeValues": {":seen": replacing.delivery_id},
            }
        )
        if holding is not None:
            return self._claim_held(claimed, item, holding, batch_id, row_number)
        try:
            self._table.put_item(Item=item, **condition)
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        return claimed

    def claim_slice(self, claims: Sequence[SliceClaim], *, now: int) -> list[EmailDelivery]:
        """Claim the first sends of up to :data:`MAX_SLICE` rows in one transaction of
        conditional puts (each needs its item absent, as :meth:`claim`): the rows claimed, in
        the order given. A row claimed or mailed already is left out (its put's condition
        fails: the transaction goes again without it); the others are claimed all or none."""
        if len(claims) > MAX_SLICE:
            raise ValueError(f"at most {MAX_SLICE} claims a transaction, not {len(claims)}")
        pending = list(claims)
        conflicts = 0
        while pending:
            built = [claim_item(c, now=now) for c in pending]
            try:
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table_name,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        }
                        for _, item in built
                    ]
                )
            except ClientError as exc:
                reasons = cancellation_reasons(exc, len(pending))
                conflicts = back_off_on_conflict(exc, reasons, conflicts)
                pending = [
                    c
                    for c, r in zip(pending, reasons, strict=True)
                    if r.get("Code") != "ConditionalCheckFailed"
                ]
                continue
            return [claimed for claimed, _ in built]
        return []

    def record_sent_slice(self, sent: Sequence[tuple[EmailDelivery, str]], *, now: int) -> None:
        """:meth:`record_sent` for a slice's sends (claim, SES message id) in one transaction
        of the same conditional updates; should any condition not hold (SES's event came
        first), each row is recorded on its own instead."""
        for start in range(0, len(sent), MAX_SLICE):
            part = sent[start : start + MAX_SLICE]
            if len(part) == 1:
                self.record_sent(part[0][0], message_id=part[0][1], now=now)
                continue
            try:
                self._client.transact_write_items(
                    TransactItems=[
                        {"Update": {"TableName": self.table_name,
                                    **self._sent_update(claimed, message_id, now)}}
                        for claimed, message_id in part
                    ]
                )  # fmt: skip
            except ClientError as exc:
                cancellation_reasons(exc, len(part))  # anything but a cancellation goes up
                for claimed, message_id in part:
                    self.record_sent(claimed, message_id=message_id, now=now)

    def _claim_held(
        self,
        claimed: EmailDelivery,
        item: dict[str, Any],
        holding: tuple[str, str],
        batch_id: str,
        row_number: int,
    ) -> EmailDelivery | None:
        """A first claim and a check of the holding, in one transaction."""
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "ConditionCheck": {
                    "TableName": self.table_name,
                    "Key": {"pk": holding[0], "sk": holding[1]},
                    "ConditionExpression": "batch_id = :b AND row_number = :r",
                    "ExpressionAttributeValues": {":b": batch_id, ":r": row_number},
                }
            },
        ]
        failed = self._transact_if(items)
        if failed == 0:
            return None
        if failed is not None:
            raise NoLongerHeld(f"row {row_number} of batch {batch_id}")
        return claimed

    def _sent_update(self, claimed: EmailDelivery, message_id: str, now: int) -> dict[str, Any]:
        """The conditional update that records a send (the item still this attempt's, and
        ``unknown``)."""
        step = event_step(
            EmailEventRecord(
                at=now, state=EmailState.SENT, source="send", delivery_id=claimed.delivery_id
            )
        )
        return {
            "Key": self._key_of(claimed),
            "UpdateExpression": (
                "SET message_id = :m, sent_at = :now, updated_at = :now, #s = :sent, "
                "history = list_append(history, :step) ADD version :one"
            ),
            "ConditionExpression": "delivery_id = :d AND #s = :unknown",
            "ExpressionAttributeNames": {"#s": STATE_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":d": claimed.delivery_id,
                ":m": message_id,
                ":now": now,
                ":step": [step],
                ":one": 1,
                ":sent": EmailState.SENT.value,
                ":unknown": EmailState.UNKNOWN.value,
            },
        }

    def record_sent(self, claimed: EmailDelivery, *, message_id: str, now: int) -> None:
        """SES took the message: ``sent`` (unless an event moved it on already) and its id."""
        try:
            self._table.update_item(**self._sent_update(claimed, message_id, now))
        except ClientError as exc:
            if not conditional_failed(exc):
                raise
            # SES's Send event came first and moved the state on: keep that, add the id.
            self._table.update_item(
                Key=self._key_of(claimed),
                UpdateExpression="SET message_id = :m, sent_at = :now ADD version :one",
                ConditionExpression="delivery_id = :d",
                ExpressionAttributeValues={
                    ":d": claimed.delivery_id, ":m": message_id, ":now": now, ":one": 1
                },
            )  # fmt: skip

    def record_failed(self, claimed: EmailDelivery, *, reason: str, now: int) -> None:
        """SES refused the message (or it could not be made): ``failed`` with why."""
        step = event_step(
            EmailEventRecord(
                at=now,
                state=EmailState.FAILED,
                source="send",
                detail=reason,
                delivery_id=claimed.delivery_id,
            )
        )
        self._update_if(
            Key=self._key_of(claimed),
            UpdateExpression=(
                "SET #s = :failed, reason = :r, updated_at = :now, "
                "history = list_append(history, :step) ADD version :one"
            ),
            ConditionExpression="delivery_id = :d AND #s = :unknown",
            ExpressionAttributeNames={"#s": STATE_ATTRIBUTE},
            ExpressionAttributeValues={
                ":d": claimed.delivery_id,
                ":failed": EmailState.FAILED.value,
                ":unknown": EmailState.UNKNOWN.value,
                ":r": reason[:1000],
                ":now": now,
                ":step": [step],
                ":one": 1,
            },
        )

    def record_unknown(self, claimed: EmailDelivery, *, reason: str, now: int) -> None:
        """The call's outcome is not known: the row stays ``unknown``, with why."""
        self._update_if(
            Key=self._key_of(claimed),
            UpdateExpression="SET reason = :r, updated_at = :now ADD version :one",
            ConditionExpression="delivery_id = :d AND #s = :unknown",
            ExpressionAttributeNames={"#s": STATE_ATTRIBUTE},
            ExpressionAttributeValues={
                ":d": claimed.delivery_id,
                ":unknown": EmailState.UNKNOWN.value,
                ":r": reason[:1000],
                ":now": now,
                ":one": 1,
            },
        )

    def release(self, claimed: EmailDelivery) -> bool:
        """Give a claim back: SES surely sent nothing (throttled, paused, unreachable).

        A first attempt's item is deleted; a resend's goes back to the state it replaced.
        """
        key = self._key_of(claimed)
        condition = "delivery_id = :d AND #s = :unknown"
        values = {":d": claimed.delivery_id, ":unknown": EmailState.UNKNOWN.value}
        try:
            if claimed.attempts <= 1:
                self._table.delete_item(
                    Key=key,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#s": STATE_ATTRIBUTE},
                    ExpressionAttributeValues=values,
                )
            else:
                self._table.update_item(
                    Key=key,
                    UpdateExpression="SET #s = previous_state, history = :h ADD version :one",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#s": STATE_ATTRIBUTE},
                    ExpressionAttributeValues={
                        **values,
                        ":h": [event_step(h) for h in claimed.history[:-1]],
                        ":one": 1,
                    },
                )
        except ClientError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def put_outcome(
        self,
        batch_id: str,
        row_number: int,
        *,
        state: EmailState,
        reason: str,
        now: int,
        voucher_code: str = "",
    ) -> bool:
        """A row that is not sent at all (the template failed, SES cannot take the address):
        its outcome, unless the row has an item already."""
        step = EmailEventRecord(at=now, state=state, source="send", detail=reason)
        record = EmailDelivery(
            batch_id=batch_id,
            row_number=row_number,
            delivery_id=delivery_id(batch_id, row_number, 0),
            state=state,
            voucher_code=voucher_code,
            reason=reason[:1000],
            updated_at=now,
            history=[step],
        )
        return self._put_if_absent(item_of(record, version=1))

    # ------------------------------------------------------------------ SES's events

    def record_event(
        self,
        batch_id: str,
        row_number: int,
        event: EmailEventRecord,
        reminder_days: int | None = None,
    ) -> tuple[EmailDelivery, bool] | None:
        """Apply one SES event (forward only, duplicates dropped): the record after it and
        whether its state changed; None when the row has no delivery item."""
        key = self._key(batch_id, row_number, reminder_days)
        for _ in range(_MAX_EVENT_RETRIES):
            got = self._table.get_item(Key=key, ConsistentRead=True)
            if "Item" not in got:
                return None
            version = int(got["Item"].get("version", 0))
            current = record_of(got["Item"])
            applied = apply_event(current, event)
            if applied.duplicate or adds_nothing(current, event):
                return current, False
            item = item_of(applied.delivery, version=version + 1)
            if "previous_state" in got["Item"]:
                item["previous_state"] = got["Item"]["previous_state"]
            try:
                self._table.put_item(
                    Item=item,
                    ConditionExpression="version = :v",
                    ExpressionAttributeValues={":v": version},
                )
            except ClientError as exc:
                if conditional_failed(exc):
                    continue  # another event or the sender wrote first: read again
                raise
            return applied.delivery, applied.changed
        raise RuntimeError(
            f"delivery {batch_id}/{row_number}: too many concurrent writes; retried later"
        )

    # ------------------------------------------------------------------ the results' refresh

    def take_refresh(self, batch_id: str, *, now: int, every: int) -> int | None:
        """The seconds until the batch's results are rewritten, for the one caller a window
        that asks (a conditional write on the batch item's ``email_refresh_due``); None for
        the others. The window is ``every``, or the longer one the last rewrite asked for
        (``email_refresh_window``: a batch whose rewrite is slow is rewritten less often)."""
        got = self._updated_if(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
            UpdateExpression=(
                "SET email_refresh_due = if_not_exists(email_refresh_window, :every) + :now"
            ),
            ConditionExpression=(
                "attribute_exists(pk) AND "
                "(attribute_not_exists(email_refresh_due) OR email_refresh_due <= :now)"
            ),
            ExpressionAttributeValues={":now": now, ":every": every},
            ReturnValues="UPDATED_NEW",
        )
        return None if got is None else max(1, int(got["email_refresh_due"]) - now)
