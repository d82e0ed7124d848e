"""``voucher-distributor redemptions``: every handed-out code of a batch or a program with its
state (the redemption sync's last look), as a CSV, and the counts by state."""

from __future__ import annotations

from pathlib import Path

from voucher_distributor.domain.redemption import redemption_csv
from voucher_distributor_cli.ops.target import OpsError, Target


def redemptions_report(
    target: Target, *, batch_id: str | None = None, program: str | None = None
) -> tuple[bytes, dict[str, int]]:
    """The report's bytes (UTF-8 with BOM) and its counts by state."""
    ledger = target.ledger
    if batch_id:
        if ledger.batches.get_batch(batch_id) is None:
            raise OpsError(f"no batch {batch_id} in the ledger")
        return redemption_csv(ledger.assignments.iter_assignments(batch_id))
    if program:
        return redemption_csv(ledger.assignments.iter_program_assignments(program))
    raise OpsError("which codes? pass --batch ID or --program NAME")


def write_report(body: bytes, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(body)
