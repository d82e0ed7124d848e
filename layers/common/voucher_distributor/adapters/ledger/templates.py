"""The accepted e-mail templates: the last version of each ``templates/`` folder that passed
its check (``pipeline.templates``), the only one the sender reads.

``pk = TPL#<folder>``, ``sk = TEMPLATE`` (folder below ``templates/``, e.g. ``default/de`` or
``Acme Corp/Spring Certification Drive``): the three parts as accepted, when, from which object
versions, and whether a refusal's ``.error.json`` stands. A refused upload never touches the
accepted parts, so the previous template stays in use. One item holds all three parts: they
change together (at most ``MAX_TEMPLATE_FILE_BYTES`` each keeps it under DynamoDB's 400 KB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from voucher_distributor.adapters.ledger.table import Store, conditional_failed, plain
from voucher_distributor.domain.email_message import EmailTemplate

TEMPLATE_SK = "TEMPLATE"


def template_pk(folder: str) -> str:
    return f"TPL#{folder}"


@dataclass(frozen=True)
class AcceptedTemplate:
    folder: str
    template: EmailTemplate
    accepted_at: int
    versions: dict[str, str]


class TemplateStore(Store):
    """``TPL#<folder>``/``TEMPLATE``: one item per template folder."""

    def _key(self, folder: str) -> dict[str, str]:
        return {"pk": template_pk(folder), "sk": TEMPLATE_SK}

    def get_accepted(self, folder: str) -> AcceptedTemplate | None:
        """The folder's accepted template, or None (never accepted, or no such folder)."""
        item = self._table.get_item(Key=self._key(folder), ConsistentRead=True).get("Item")
        if item is None or "subject" not in item:
            return None
        return _accepted(folder, plain(item))

    def accept(
        self, folder: str, template: EmailTemplate, *, versions: dict[str, str], now: int
    ) -> bool | None:
        """Make ``template`` the folder's; None when a check that read the files later already
        wrote (a late, older check changes nothing). Else whether an error answer stood before
        (the caller removes it)."""
        try:
            got = self._table.update_item(
                Key=self._key(folder),
                UpdateExpression=(
                    "SET subject = :s, #text = :t, html = :h, accepted_at = :now, "
                    "checked_at = :now, versions = :v, error_written = :no"
                ),
                ConditionExpression="attribute_not_exists(checked_at) OR checked_at <= :now",
                ExpressionAttributeNames={"#text": "text"},
                ExpressionAttributeValues={
                    ":s": template.subject,
                    ":t": template.text,
                    ":h": template.html,
                    ":now": now,
                    ":v": versions,
                    ":no": False,
                },
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        return bool((got.get("Attributes") or {}).get("error_written", False))

    def refuse(self, folder: str, *, now: int) -> int | None:
        """Note that the folder's error answer stands; when its accepted template (still in use)
        was accepted, or None when it has none."""
        got = self._table.update_item(
            Key=self._key(folder),
            UpdateExpression="SET error_written = :yes, refused_at = :now",
            ExpressionAttributeValues={":yes": True, ":now": now},
            ReturnValues="ALL_NEW",
        )
        accepted_at: Any = (got.get("Attributes") or {}).get("accepted_at")
        return int(accepted_at) if accepted_at is not None else None


def _accepted(folder: str, item: dict[str, Any]) -> AcceptedTemplate:
    return AcceptedTemplate(
        folder=folder,
        template=EmailTemplate(
            subject=str(item["subject"]), text=str(item["text"]), html=str(item["html"])
        ),
        accepted_at=int(item.get("accepted_at", 0)),
        versions={str(k): str(v) for k, v in (item.get("versions") or {}).items()},
    )
