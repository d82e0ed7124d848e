"""What a local run shows and gives back: its progress line, and each input's result (the one
JSON line ``local run`` prints last)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Progress:
    """What the run has done so far, read from the ledger."""

    status: str = "waiting"
    rows: int = 0
    rejected: int = 0
    chunks: int = 0
    purchases: int = 0
    vouchers_ready: int = 0
    assigned: int = 0
    failed: int = 0
    existing: int = 0
    #: E-mails by state (None: the batch mails nobody).
    emails: dict[str, int] | None = None

    def line(self) -> str:
        return (
            f"[{self.status:>10}] rows read {self.rows:,} | rejected {self.rejected:,} | "
            + (f"existing {self.existing:,} | " if self.existing else "")
            + f"purchases {self.purchases}/{self.chunks} | "
            f"vouchers ready {self.vouchers_ready:,} | assigned {self.assigned:,}"
            + (f" | failed {self.failed:,}" if self.failed else "")
            + (self._email_part() if self.emails is not None else "")
        )

    def _email_part(self) -> str:
        assert self.emails is not None
        mailed = sum(n for state, n in self.emails.items() if state != "failed")
        return f" | e-mails sent {mailed:,} | bounced {self.emails.get('bounced', 0):,}"


@dataclass
class RunResult:
    batch_id: str
    summary: dict[str, Any]
    results_csv: Path | None
    summary_json: Path | None
    rows: list[dict[str, str]] = field(default_factory=list)
    #: The input this result answers (``local run`` sets it).
    input: Path | None = None
    #: The request was refused at the door: its refusal (``results/requests/invalid/…``) and
    #: where it was copied. Then there is no batch: ``summary`` is the refusal itself.
    refusal_copy: Path | None = None
    #: The e-mail history beside the results (``<name>.deliveries.csv``), when the batch mails.
    deliveries_csv: Path | None = None
    #: Where the run's e-mails are, one ``.eml`` each.
    mail_dir: Path | None = None

    @property
    def refused(self) -> bool:
        return self.summary.get("status") == "refused"

    def final_line(self) -> dict[str, Any]:
        """The one JSON object ``local run`` prints last."""
        where = {"input": str(self.input)} if self.input is not None else {}
        if self.refused:
            return {
                **where,
                "batchId": self.batch_id or None,
                "status": "refused",
                "error": self.summary.get("error"),
                "problems": self.summary.get("problems", []),
                "results": {"error": str(self.refusal_copy) if self.refusal_copy else None},
            }
        return {
            **where,
            "batchId": self.batch_id,
            "status": self.summary.get("status"),
            **({"dryRun": True} if self.summary.get("dryRun") else {}),
            "counts": self.summary.get("counts"),
            "blankLines": self.summary.get("blankLines", 0),
            "purchases": [
                {
                    "purchaseCode": p.get("purchaseCode"),
                    "quantity": p.get("quantity"),
                    "partner": p.get("partner"),
                    "program": p.get("program"),
                    "state": p.get("state"),
                }
                for p in self.summary.get("purchases", [])
            ],
            "results": {
                "csv": str(self.results_csv) if self.results_csv else None,
                "summary": str(self.summary_json) if self.summary_json else None,
            },
            **({"error": self.summary["error"]} if self.summary.get("error") else {}),
            **{k: self.summary[k] for k in ("retryOf", "retriedBy") if self.summary.get(k)},
            **(
                {"callbacks": _callback_counts(self.summary)} if "callbacks" in self.summary else {}
            ),
            **({"emails": self.summary["emails"]} if "emails" in self.summary else {}),
            **({"mailDir": str(self.mail_dir)} if self.mail_dir is not None else {}),
        }


def _callback_counts(summary: dict[str, Any]) -> dict[str, int]:
    """The summary's callback deliveries by state (each one's attempts are in the summary)."""
    counts = {"delivered": 0, "pending": 0, "failed": 0}
    for delivery in summary.get("callbacks") or []:
        counts[str(delivery.get("state"))] = counts.get(str(delivery.get("state")), 0) + 1
    return counts


def summarise_rows(rows: list[dict[str, str]]) -> Counter[str]:
    """Counts of the results CSV by status (what a user would tally in a spreadsheet)."""
    return Counter(row.get("status", "") for row in rows)
