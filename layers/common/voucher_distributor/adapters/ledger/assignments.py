"""Assignments: one item per batch row, who got which code from which purchase, or why not.

Assignment items carry ``email``, the key of the ``by-email`` index, and the code, purchase
and status, but not the recipient's names or extra columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from voucher_distributor.adapters.ledger.table import (
    CODE_INDEX,
    EMAIL_INDEX,
    PROGRAM_INDEX,
    Store,
    batch_pk,
    plain,
    row_sk,
)
from voucher_distributor.models.ledger import AssignmentRecord, RedemptionRecord

_ASSIGNMENT_FIELDS = (
    "email",
    "partner_name",
    "program_name",
    "chunk_no",
    "status",
    "voucher_code",
    "purchase_code",
    "expires_utc",
    "reason",
)


def assignment_item(record: AssignmentRecord) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": batch_pk(record.batch_id), "sk": row_sk(record.row_number)}
    for name in _ASSIGNMENT_FIELDS:
        value = getattr(record, name)
        if value != "":
            item[name] = value
    return item


def assignment_record(item: Mapping[str, Any]) -> AssignmentRecord:
    redemption = None
    if "redemption" in item:
        redemption = RedemptionRecord.model_validate(
            {
                **plain(item["redemption"]),
                "expiry_noticed_at": plain(item.get("expiry_noticed_at")),
            }
        )
    return AssignmentRecord(
        batch_id=str(item["pk"]).removeprefix("B#"),
        row_number=int(str(item["sk"]).removeprefix("R#")),
        redemption=redemption,
        **{name: item[name] for name in _ASSIGNMENT_FIELDS if name in item},
    )


class AssignmentStore(Store):
    """The batch's rows (``B#<batch>``/``R#<row:09>``), and by e-mail through the index."""

    def put_assignments(self, records: Iterable[AssignmentRecord]) -> int:
        """Write assignment items (25 per request); rewriting the same item is harmless.

        An item keeps what the ledger is for (who got which code from which purchase, or why
        not), not a copy of the recipient's row: names, external ids and extra columns live in
        the results file only. Fewer attributes also means cheaper writes.
        """
        count = 0
        with self._table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as writer:
            for record in records:
                writer.put_item(Item=assignment_item(record))
                count += 1
        return count

    def iter_assignments(self, batch_id: str) -> Iterator[AssignmentRecord]:
        """A batch's assignments in row order."""
        for item in self._query_prefix(batch_id, "R#"):
            yield assignment_record(item)

    def assignments_for_email(self, email: str) -> list[AssignmentRecord]:
        return [
            assignment_record(plain(item))
            for item in self._pages(
                self._table.query,
                IndexName=EMAIL_INDEX,
                KeyConditionExpression="email = :email",
                ExpressionAttributeValues={":email": email},
            )
        ]

    def get_assignments(
        self, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], AssignmentRecord]:
        """Assignment items by (batch, row), 100 keys a request; missing ones are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, int], AssignmentRecord] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [
                        {"pk": batch_pk(b), "sk": row_sk(r)} for b, r in wanted[start : start + 100]
                    ],
                    "ConsistentRead": True,
                }
            }
            while request:
                got = self._client.batch_get_item(RequestItems=request)
                for item in got["Responses"].get(self.table_name, []):
                    record = assignment_record(plain(item))
                    found[(record.batch_id, record.row_number)] = record
                request = got.get("UnprocessedKeys") or {}
        return found

    def find_voucher_code(self, voucher_code: str) -> AssignmentRecord | None:
        """The assignment that handed out ``voucher_code``: one Query of the ``by-code`` index
        (assigned rows only), whatever the table's size."""
        got = self._table.query(
            IndexName=CODE_INDEX,
            KeyConditionExpression="voucher_code = :code",
            ExpressionAttributeValues={":code": voucher_code},
            Limit=1,
        )
        items = got.get("Items") or []
        return assignment_record(plain(items[0])) if items else None

    def iter_program_assignments(self, program_name: str) -> Iterator[AssignmentRecord]:
        """Every handed-out code of a program (any partner): the ``by-program`` index, which
        holds assigned rows only, page after page."""
        for item in self._pages(
            self._table.query,
            IndexName=PROGRAM_INDEX,
            KeyConditionExpression="program_name = :program",
            ExpressionAttributeValues={":program": program_name},
        ):
            record = assignment_record(plain({**item, "program_name": program_name}))
            if record.status == "assigned":
                yield record
