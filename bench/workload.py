"""Synthetic recipient CSVs: valid, distinct rows for the sandbox's $0 programs."""

from __future__ import annotations

from pathlib import Path

PARTNER = "Acme Corp"
PROGRAMS = ("Spring Certification Drive", "Cloud Fundamentals Exam Vouchers")
HEADER = "email,first_name,last_name,external_id,partner_name,program_name\r\n"
#: The bench's stack measures the pipeline, not its guards: no batch waits for approval.
NO_LIMITS = {"ApprovalThreshold": "0", "DailyVoucherLimit": "0", "MaxRecipientsPerBatch": "0"}


def write_csv(path: Path, rows: int, *, programs: tuple[str, ...] = PROGRAMS) -> Path:
    """``rows`` recipients, alternating between ``programs``; written in blocks, never held."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        block: list[str] = []
        for n in range(1, rows + 1):
            program = programs[n % len(programs)]
            block.append(
                f"person{n}@acme.example,First{n},Last{n},E{n:07d},{PARTNER},{program}\r\n"
            )
            if len(block) >= 10_000:
                out.write("".join(block))
                block.clear()
        out.write("".join(block))
    return path
