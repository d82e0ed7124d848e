"""Holdings: one voucher per person per program.

A holding (``pk = H#<e-mail>``, ``sk = P#<partner>\t<program>``, names case-folded) is claimed
with a conditional write before anything is bought and points at the batch row that gets the
code, so every holding of a person is one Query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.assignments import AssignmentStore
from voucher_distributor.adapters.ledger.table import (
    BATCH_SK,
    CLAIMS_PER_CALL,
    LedgerTable,
    Store,
    back_off_on_conflict,
    batch_pk,
    cancellation_reasons,
    conditional_failed,
    holding_pk,
    holding_sk,
    plain,
)
from voucher_distributor.models.ledger import BatchStatus, HoldingRecord, PreviousHolding

#: A replaced row of a batch in one of these states, with no outcome, never got a code (a
#: rejected batch writes no assignment items): a reissue's release does not go back to it.
_ENDED_BATCH_STATES = frozenset(
    {BatchStatus.REPORTING.value, BatchStatus.DONE.value, BatchStatus.FAILED.value}
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch row asking for a person's voucher of one (partner, program)."""

    email: str
    partner_name: str
    program_name: str
    batch_id: str
    row_number: int
    reissue: bool = False


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """``claimed``: the row gets a new code. ``reissued``: the same, replacing ``previous``.
    ``held``: the person already holds one (``holding``); nothing is bought for the row."""

    kind: Literal["claimed", "reissued", "held"]
    holding: HoldingRecord | None = None
    previous: PreviousHolding | None = None


class HoldingStore(Store):
    """Claims and releases go out 100 to a transaction, the transactions on a pool of workers."""

    def __init__(
        self, table: LedgerTable, assignments: AssignmentStore, *, claim_workers: int = 16
    ) -> None:
        super().__init__(table)
        self._assignments = assignments
        self._claim_workers = max(1, claim_workers)
        self._pool: ThreadPoolExecutor | None = None

    def claim_holdings(self, claims: Sequence[Claim], *, now: int) -> list[ClaimOutcome]:
        """Claim each person's voucher of a program; outcomes in ``claims`` order.

        Race-free: every claim is a conditional put, so of two batches claiming the same person
        at the same moment exactly one gets ``claimed`` and the other ``held``. A batch claiming
        again what it already holds (a replayed ingest) gets its claim back. Claims go out 100
        to a transaction (one call instead of a hundred; a cancelled one says which items were
        held, and the rest go again), the transactions in parallel; a reissue is a read and a
        conditional update of its own.
        """
        outcomes: list[ClaimOutcome | None] = [None] * len(claims)
        groups = [
            list(range(start, min(start + CLAIMS_PER_CALL, len(claims))))
            for start in range(0, len(claims), CLAIMS_PER_CALL)
        ]
        firsts = [[i for i in group if not claims[i].reissue] for group in groups]
        reissues = [i for i, c in enumerate(claims) if c.reissue]
        for indices, got in zip(
            firsts,
            self._map(lambda ix: self._claim_together([claims[i] for i in ix], now), firsts),
            strict=True,
        ):
            for index, outcome in zip(indices, got, strict=True):
                outcomes[index] = outcome
        for index, outcome in zip(
            reissues, self._map(lambda i: self._claim(claims[i], now), reissues), strict=True
        ):
            outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    def look_up_holdings(self, claims: Sequence[Claim], *, now: int) -> list[ClaimOutcome]:
        """What :meth:`claim_holdings` would answer, without writing anything (a dry run).

        One consistent ``BatchGetItem`` per 100 claims. A reissue's ``previous`` names the
        batch row it would replace (its code is not looked up: nothing is replaced).
        """
        keys = [self._holding_key(c) for c in claims]
        wanted = list({(k["pk"], k["sk"]): k for k in keys}.values())
        found: dict[tuple[str, str], HoldingRecord] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {"Keys": wanted[start : start + 100], "ConsistentRead": True}
            }
            while request:
                got = self._client.batch_get_item(RequestItems=request)
                for item in got["Responses"].get(self.table_name, []):
                    found[(str(item["pk"]), str(item["sk"]))] = holding_record(item)
                request = got.get("UnprocessedKeys") or {}
        outcomes: list[ClaimOutcome] = []
        for claim, key in zip(claims, keys, strict=True):
            held = found.get((key["pk"], key["sk"]))
            if held is None or held.batch_id == claim.batch_id:
                outcomes.append(ClaimOutcome("claimed"))
            elif claim.reissue:
                previous = PreviousHolding(
                    batch_id=held.batch_id,
                    row_number=held.row_number,
                    replaced_at=now,
                    replaced_by=claim.batch_id,
                )
                outcomes.append(ClaimOutcome("reissued", holding=held, previous=previous))
            else:
                outcomes.append(ClaimOutcome("held", holding=held))
        return outcomes

    def _map(self, work: Any, items: Sequence[Any]) -> list[Any]:
        """``work`` over ``items`` on the claim workers (in the caller's thread for one)."""
        if len(items) <= 1 or self._claim_workers == 1:
            return [work(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._claim_workers, thread_name_prefix="claim")
        return list(self._pool.map(work, items))

    def _claim_together(self, claims: Sequence[Claim], now: int) -> list[ClaimOutcome]:
        """First claims (no reissue), at most 100, in one transaction of conditional puts."""
        outcomes: dict[int, ClaimOutcome] = {}
        pending = list(range(len(claims)))
        conflicts = 0
        while pending:
            try:
                self._wire.transact_write_items(
                    TransactItems=[{"Put": self._claim_put(claims[i], now)} for i in pending]
                )
            except ClientError as exc:
                reasons = cancellation_reasons(exc, len(pending))
                again: list[int] = []
                for index, reason in zip(pending, reasons, strict=True):
                    code = reason.get("Code")
                    held = None
                    if code == "ConditionalCheckFailed":
                        old = reason.get("Item")  # wire-typed: errors skip the decoding
                        claim = claims[index]
                        held = (
                            holding_record(untyped(old))
                            if old
                            else self.get_holding(
                                claim.email, claim.partner_name, claim.program_name
                            )
                        )
                    if held is not None:
                        outcomes[index] = ClaimOutcome("held", holding=held)
                    else:
                        # Would have gone through ("None"), lost a race with another batch's
                        # transaction ("TransactionConflict"), or was released in between.
                        again.append(index)
                conflicts = back_off_on_conflict(exc, reasons, conflicts)
                pending = again
                continue
            outcomes.update((i, ClaimOutcome("claimed")) for i in pending)
            pending = []
        return [outcomes[i] for i in range(len(claims))]

    def _claim_put(self, claim: Claim, now: int) -> dict[str, Any]:
        """The claim's conditional put, in wire form (for the plain client).

        A put, not an update: one item write either way, and the emulation parses no update
        expression. Only this batch's replay may overwrite, and a first claim has no history.
        """
        key = self._holding_key(claim)
        return {
            "TableName": self.table_name,
            "Item": {
                "pk": {"S": key["pk"]},
                "sk": {"S": key["sk"]},
                "holder": {"S": claim.email},
                "partner_name": {"S": claim.partner_name},
                "program_name": {"S": claim.program_name},
                "batch_id": {"S": claim.batch_id},
                "row_number": {"N": str(claim.row_number)},
                "claimed_at": {"N": str(now)},
            },
            "ConditionExpression": "attribute_not_exists(pk) OR batch_id = :batch",
            "ExpressionAttributeValues": {":batch": {"S": claim.batch_id}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _claim(self, claim: Claim, now: int) -> ClaimOutcome:
        while True:
            if claim.reissue:
                current = self.get_holding(claim.email, claim.partner_name, claim.program_name)
                if current is not None:
                    outcome = self._reissue(claim, current, now)
                    if outcome is not None:
                        return outcome
                    continue  # the holding changed under us: look again
            try:
                self._wire.put_item(**self._claim_put(claim, now))
            except ClientError as exc:
                if not conditional_failed(exc):
                    raise
                old = exc.response.get("Item")  # wire-typed: errors skip the resource's decoding
                holding = holding_record(untyped(old)) if old else None
                if holding is None:
                    holding = self.get_holding(claim.email, claim.partner_name, claim.program_name)
                if holding is None:
                    continue  # released in between: try again
                if claim.reissue:
                    continue  # taken in between: reissue against what is there now
                return ClaimOutcome("held", holding=holding)
            return ClaimOutcome("claimed")

    def _reissue(self, claim: Claim, current: HoldingRecord, now: int) -> ClaimOutcome | None:
        """Point the holding at this row, keeping the one it replaces; None if it moved."""
        if current.batch_id == claim.batch_id:
            last = current.history[-1] if current.history else None
            previous = last if last is not None and last.replaced_by == claim.batch_id else None
            return ClaimOutcome("reissued", holding=current, previous=previous)
        old = self._assignments.get_assignments([(current.batch_id, current.row_number)]).get(
            (current.batch_id, current.row_number)
        )
        previous = PreviousHolding(
            batch_id=current.batch_id,
            row_number=current.row_number,
            voucher_code=old.voucher_code if old and old.status == "assigned" else "",
            purchase_code=old.purchase_code if old and old.status == "assigned" else "",
            replaced_at=now,
            replaced_by=claim.batch_id,
        )
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key=self._holding_key(claim),
                UpdateExpression=(
                    "SET batch_id = :batch, row_number = :row, claimed_at = :now, "
                    "history = list_append(if_not_exists(history, :empty), :previous)"
                ),
                ConditionExpression="batch_id = :old_batch AND row_number = :old_row",
                ExpressionAttributeValues={
                    ":batch": claim.batch_id,
                    ":row": claim.row_number,
                    ":now": now,
                    ":empty": [],
                    ":previous": [previous.model_dump(mode="json")],
                    ":old_batch": current.batch_id,
                    ":old_row": current.row_number,
                },
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        return ClaimOutcome("reissued", holding=current, previous=previous)

    def release_holding(self, claim: Claim) -> bool:
        """Give up this row's claim (nothing was bought for it); False if it holds none.

        A reissue's claim gives the holding back to the voucher it replaced, but only to a row
        that got its code or may still get it (its batch still buying): a replaced row whose
        own purchase failed meanwhile (its release found the holding moved, and did nothing) is
        passed over for the one before it, and with none left the holding is removed. A first
        claim removes the holding. Safe to repeat.
        """
        current = self.get_holding(claim.email, claim.partner_name, claim.program_name)
        if (
            current is None
            or current.batch_id != claim.batch_id
            or current.row_number != claim.row_number
        ):
            return False
        mine = "batch_id = :batch AND row_number = :row"
        values: dict[str, Any] = {":batch": claim.batch_id, ":row": claim.row_number}
        last = current.history[-1] if current.history else None
        restore = (
            self._restorable(current.history)
            if last is not None and last.replaced_by == claim.batch_id
            else None
        )
        try:
            if restore is not None:
                back = current.history[restore]
                dropped = ", ".join(f"history[{i}]" for i in range(restore, len(current.history)))
                self._client.update_item(
                    TableName=self.table_name,
                    Key=self._holding_key(claim),
                    UpdateExpression=(
                        f"SET batch_id = :old_batch, row_number = :old_row REMOVE {dropped}"
                    ),
                    ConditionExpression=mine,
                    ExpressionAttributeValues={
                        **values,
                        ":old_batch": back.batch_id,
                        ":old_row": back.row_number,
                    },
                )
            else:
                self._client.delete_item(
                    TableName=self.table_name,
                    Key=self._holding_key(claim),
                    ConditionExpression=mine,
                    ExpressionAttributeValues=values,
                )
        except ClientError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def _restorable(self, history: Sequence[PreviousHolding]) -> int | None:
        """The latest entry of a holding's history whose row holds a code (``assigned``) or
        may still get one (no outcome yet, its batch not ended); None: no such row."""
        outcomes = self._assignments.get_assignments((h.batch_id, h.row_number) for h in history)
        for index in range(len(history) - 1, -1, -1):
            entry = history[index]
            outcome = outcomes.get((entry.batch_id, entry.row_number))
            if outcome is not None:
                if outcome.status == "assigned":
                    return index
                continue  # its purchase failed: it holds nothing to go back to
            if self._batch_still_running(entry.batch_id):
                return index  # still buying: its own release runs if it fails
        return None

    def _batch_still_running(self, batch_id: str) -> bool:
        got = self._table.get_item(
            Key={"pk": batch_pk(batch_id), "sk": BATCH_SK},
            ConsistentRead=True,
            ProjectionExpression="#s",
            ExpressionAttributeNames={"#s": "status"},
        )
        status = (got.get("Item") or {}).get("status")
        return status is not None and status not in _ENDED_BATCH_STATES

    def release_holdings(self, claims: Sequence[Claim]) -> int:
        """Give up many rows' claims; how many were released.

        First claims go 100 to a transaction of conditional deletes (only where the holding is
        still this row's), in parallel; a reissue's claim is given back on its own.
        """
        firsts = [c for c in claims if not c.reissue]
        groups = [
            firsts[start : start + CLAIMS_PER_CALL]
            for start in range(0, len(firsts), CLAIMS_PER_CALL)
        ]
        released: int = sum(self._map(self._release_together, groups))
        reissues = [c for c in claims if c.reissue]
        return released + sum(bool(r) for r in self._map(self.release_holding, reissues))

    def _release_together(self, claims: Sequence[Claim]) -> int:
        """Delete the holdings these rows still hold, in one transaction; how many."""
        pending = list(claims)
        conflicts = 0
        released = 0
        while pending:
            try:
                self._wire.transact_write_items(
                    TransactItems=[{"Delete": self._release_delete(c)} for c in pending]
                )
            except ClientError as exc:
                reasons = cancellation_reasons(exc, len(pending))
                # Held by another row (or gone) needs nothing; the rest go again.
                again = [
                    c
                    for c, r in zip(pending, reasons, strict=True)
                    if r.get("Code") != "ConditionalCheckFailed"
                ]
                conflicts = back_off_on_conflict(exc, reasons, conflicts)
                pending = again
                continue
            released += len(pending)
            pending = []
        return released

    def _release_delete(self, claim: Claim) -> dict[str, Any]:
        key = self._holding_key(claim)
        return {
            "TableName": self.table_name,
            "Key": {"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}},
            "ConditionExpression": "batch_id = :batch AND row_number = :row",
            "ExpressionAttributeValues": {
                ":batch": {"S": claim.batch_id},
                ":row": {"N": str(claim.row_number)},
            },
        }

    def get_holding(self, email: str, partner_name: str, program_name: str) -> HoldingRecord | None:
        got = self._client.get_item(
            TableName=self.table_name,
            Key={"pk": holding_pk(email), "sk": holding_sk(partner_name, program_name)},
            ConsistentRead=True,
        )
        item = got.get("Item")
        return holding_record(item) if item else None

    def holdings_for_email(self, email: str) -> list[HoldingRecord]:
        """Every voucher this person holds, one per (partner, program): one Query."""
        return [
            holding_record(item)
            for item in self._pages(
                self._table.query,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                ExpressionAttributeValues={":pk": holding_pk(email), ":p": "P#"},
                ConsistentRead=True,
            )
        ]

    @staticmethod
    def _holding_key(claim: Claim) -> dict[str, str]:
        return {
            "pk": holding_pk(claim.email),
            "sk": holding_sk(claim.partner_name, claim.program_name),
        }


_deserializer = TypeDeserializer()


def untyped(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def holding_record(item: Mapping[str, Any]) -> HoldingRecord:
    # Stored as ``holder``, not ``email``: an ``email`` attribute would put the holding in the
    # by-email index of assignments.
    values = plain(dict(item))
    values["email"] = values.pop("holder", "")
    return HoldingRecord.model_validate(values)
