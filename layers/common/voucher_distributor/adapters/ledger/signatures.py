"""The HTTP API's used signatures: every accepted ``webhook-id``, bound to what it signed.

Standard Webhooks signs ``id.timestamp.body`` only, so within the timestamp window a captured
request could be sent again to another route or with another query. Each accepted id is
remembered (a TTL item) with its client, method, path, query and body hash: the same request
again is answered as before, anything else is a replay.
"""

from __future__ import annotations

from voucher_distributor.adapters.ledger.table import (
    SIGNATURE_SK,
    Store,
    compact,
    plain,
    signature_pk,
)
from voucher_distributor.models.ledger import SignatureUse


class SignatureStore(Store):
    """``API#sig#<webhook-id>``/``SIGNATURE``: one item per accepted ``webhook-id``."""

    def remember_signature(self, use: SignatureUse) -> SignatureUse | None:
        """Record the first use of a ``webhook-id``; the earlier use if there was one."""
        item = {"pk": signature_pk(use.webhook_id), "sk": SIGNATURE_SK}
        if self._put_if_absent(compact({**item, **use.model_dump(mode="json")})):
            return None
        got = self._table.get_item(Key=item, ConsistentRead=True).get("Item")
        if got is None:  # expired between the write and the read: this use stands
            return self.remember_signature(use)
        return SignatureUse.model_validate(plain(got))
