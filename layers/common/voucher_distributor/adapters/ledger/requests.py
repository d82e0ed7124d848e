"""The HTTP API's idempotency records: the first answer to a key, found by the batch id."""

from __future__ import annotations

from voucher_distributor.adapters.ledger.table import (
    API_REQUEST_SK,
    Store,
    api_request_pk,
    compact,
    plain,
)
from voucher_distributor.models.ledger import ApiRequestRecord


class ApiRequestStore(Store):
    """``API#<batch>``/``REQUEST``: keyed by the batch id the request's key determines."""

    def remember_api_request(self, record: ApiRequestRecord) -> ApiRequestRecord | None:
        """Record the first answer to an idempotency key; the earlier record if there is one.

        Keyed by the batch id, which the key determines: a status look-up finds it too.
        """
        item = {"pk": api_request_pk(record.batch_id), "sk": API_REQUEST_SK}
        if not self._put_if_absent(compact({**item, **record.model_dump(mode="json")})):
            got = self._table.get_item(Key=item, ConsistentRead=True).get("Item")
            if got is None:  # expired between the write and the read: this answer stands
                return self.remember_api_request(record)
            return ApiRequestRecord.model_validate(plain(got))
        return None

    def get_api_request(self, batch_id: str) -> ApiRequestRecord | None:
        got = self._get(api_request_pk(batch_id), API_REQUEST_SK)
        return ApiRequestRecord.model_validate(got) if got else None
