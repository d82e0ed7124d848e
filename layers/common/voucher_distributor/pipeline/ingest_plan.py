"""Planning an input's rows: claims in rounds, chunks per (partner, program), the rejected and
existing rows' files. ``ingest`` runs it under the batch's ingest lease."""

from __future__ import annotations

import json
from typing import IO, Any

from voucher_distributor.adapters.ledger.holdings import Claim, ClaimOutcome
from voucher_distributor.domain.batches import work_key
from voucher_distributor.domain.chunking import (
    MAX_CHUNK,
    DuplicateTracker,
    Target,
    missing_target_reason,
    resolve_target,
    spelling_note,
)
from voucher_distributor.domain.eligibility import email_refusal
from voucher_distributor.domain.email_templates import normalise_language
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.models.certiverse import PartnerVoucherProgramModel
from voucher_distributor.models.email import ProgramExam
from voucher_distributor.models.ledger import (
    BatchRecord,
    ChunkRecord,
    ChunkState,
    RecipientRecord,
)
from voucher_distributor.pipeline.context import Services
from voucher_distributor.pipeline.ingest_types import (
    CLAIM_BATCH,
    Accepted,
    ClaimRound,
    IngestRequest,
    InputTooLarge,
    Plan,
    PlanChanged,
)
from voucher_distributor.pipeline.preflight import Preflight


def plan_rows(services: Services, request: IngestRequest, plan: Plan, preflight: Preflight) -> None:
    settings = services.settings
    duplicates = DuplicateTracker()
    seen_extra = False
    most = settings.max_recipients_per_batch
    # Where a row's partner and program come from when it names none: the object metadata,
    # else the stack's defaults (both ``resolve_target`` and ``missing_target_reason`` read it).
    names = {
        "metadata_partner": request.metadata_partner,
        "metadata_program": request.metadata_program,
        "default_partner": settings.default_partner_name or None,
        "default_program": settings.default_program_name or None,
    }
    rows = iter(request.rows)
    for row in rows:
        plan.rows += 1
        if most and plan.rows > most:
            total = plan.rows + sum(1 for _ in rows)
            raise InputTooLarge(
                f"{total:,} rows, over MaxRecipientsPerBatch ({most:,}): split it into "
                f"{-(-total // most)} inputs of at most {most:,} rows each; nothing was bought"
            )
        if not seen_extra:
            plan.extra_columns = list(row.extra)
            seen_extra = True
        target = resolve_target(row, **names)
        _note_target(plan, target)
        reason = row.problem
        failure: str | None = None
        spelling = ""
        if reason is None and target is None:
            reason = missing_target_reason(row, **names)
        if reason is None and target is not None:
            verdict = preflight.check(target)
            reason = verdict.refusal
            failure = verdict.failure
            if failure is not None:
                plan.failed += 1
                _write_rejected(
                    plan.rejected_file, row, target, failure, status="failed",
                    reissue=row.reissue or request.batch.reissue,
                )  # fmt: skip
                _unclaimed(plan, request.batch, row, target)
                continue
            if reason is None and verdict.program is not None:
                reason = email_refusal(verdict.program, row.email)
            if reason is None:
                # The canonical spelling from Certiverse, so chunks of one program group together.
                assert verdict.partner is not None
                assert verdict.program is not None
                given, target = target, Target(verdict.partner.name, verdict.program.name)
                spelling = spelling_note(given, target)
                _remember_target(plan, target, verdict.program, verdict.note)
                if duplicates.seen(target.program_name, row.email):
                    reason = (
                        "duplicate: this e-mail already appears for program "
                        f"{target.program_name!r}"
                    )
        if reason is not None or target is None:
            _unclaimed(plan, request.batch, row, target)
            plan.rejected += 1
            _write_rejected(plan.rejected_file, row, target, reason or "rejected")
            name = _rejection_metric(row, target, reason)
            plan.rejected_by_class[name] = plan.rejected_by_class.get(name, 0) + 1
            continue
        plan.pending.append(Accepted(row, target, row.reissue or request.batch.reissue, spelling))
        if len(plan.pending) >= CLAIM_BATCH:
            _settle_claims(services, request.batch, plan)
    _settle_claims(services, request.batch, plan, last=True)


def _note_target(plan: Plan, target: Target | None) -> None:
    if target is not None:
        plan.partners.add(target.partner_name)
        plan.programs.add(target.program_name)


def _remember_target(
    plan: Plan, target: Target, program: PartnerVoucherProgramModel, note: str | None
) -> None:
    """What every assigned row of ``target`` is told, and the exams its e-mail lists."""
    if note:
        plan.notes[target] = note
    if target not in plan.exams:
        plan.exams[target] = [ProgramExam(name=e.name, code=e.code) for e in program.store_exams]


def _unclaimed(plan: Plan, batch: BatchRecord, row: InputRow, target: Target | None) -> None:
    if plan.replay and target is not None and row.problem is None:
        plan.unclaimed.append(
            Claim(
                row.email,
                target.partner_name,
                target.program_name,
                batch.batch_id,
                row.row_number,
                reissue=True,  # looked up one by one: a reissue's claim restores what it replaced
            )
        )


def _settle_claims(
    services: Services, batch: BatchRecord, plan: Plan, *, last: bool = False
) -> None:
    """Send the pending rows' claims, then plan the previous round's rows by what theirs found.

    One round is in flight while the next CLAIM_BATCH rows are read and checked, so reading
    overlaps the ledger's round trips; rows still join their chunks in row order. ``last``:
    wait for every round.
    """
    previous, plan.in_flight = plan.in_flight, None
    if plan.pending:
        claims = [
            Claim(
                a.row.email,
                a.target.partner_name,
                a.target.program_name,
                batch.batch_id,
                a.row.row_number,
                reissue=a.reissue,
            )
            for a in plan.pending
        ]
        ledger = services.ledger
        # A dry run only looks at what the claims would find; nothing is written.
        send = ledger.holdings.look_up_holdings if batch.dry_run else ledger.holdings.claim_holdings
        assert plan.claimer is not None
        sent = plan.claimer.submit(send, claims, now=services.now())
        plan.in_flight = ClaimRound(plan.pending, claims, sent)
        plan.pending = []
    if previous is not None:
        plan_claimed(services, plan, previous, dry_run=batch.dry_run, batch=batch)
    if last and plan.in_flight is not None:
        round_, plan.in_flight = plan.in_flight, None
        plan_claimed(services, plan, round_, dry_run=batch.dry_run, batch=batch)


def plan_claimed(
    services: Services,
    plan: Plan,
    round_: ClaimRound,
    *,
    dry_run: bool = False,
    batch: BatchRecord | None = None,
    record_only: bool = False,
) -> None:
    """A round's rows by what their claims found: ``existing``, or into a chunk (its claim
    recorded for giving back). ``record_only``: only record the claims (the input failed)."""
    outcomes = round_.outcomes.result()
    for accepted, claim, outcome in zip(round_.accepted, round_.claims, outcomes, strict=True):
        if outcome.kind == "held":
            if not record_only:
                plan.existing += 1
                _write_existing(plan.existing_file, accepted, outcome)
            continue
        reissued = outcome.kind == "reissued"
        if not dry_run:
            plan.claims_file.write(
                f"{claim.email}\t{claim.partner_name}\t{claim.program_name}"
                f"\t{claim.row_number}\t{int(reissued)}\n"
            )
        if not record_only:
            assert batch is not None
            _add_to_chunk(
                services, batch, plan, accepted, _reissue_note(outcome), reissued,
                replaces_code=outcome.previous.voucher_code if outcome.previous else "",
            )  # fmt: skip


def _reissue_note(outcome: ClaimOutcome) -> str:
    if outcome.kind != "reissued":
        return ""
    previous = outcome.previous
    if previous is None:
        return "reissued as asked"
    if previous.voucher_code:
        return f"reissued as asked; replaces voucher {previous.voucher_code}"
    return f"reissued as asked; replaces the voucher of batch {previous.batch_id}"


def _add_to_chunk(
    services: Services,
    batch: BatchRecord,
    plan: Plan,
    accepted: Accepted,
    note: str,
    reissued: bool,
    *,
    replaces_code: str = "",
) -> None:
    row, target = accepted.row, accepted.target
    note = "; ".join(n for n in (note, accepted.note, plan.notes.get(target, "")) if n)
    plan.to_buy += 1
    chunk = plan.open_chunks.setdefault(target, [])
    chunk.append(
        RecipientRecord(
            row_number=row.row_number,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            external_id=row.external_id,
            extra=row.extra,
            line=row.line,
            note=note,
            reissue=reissued,
            replaces_code=replaces_code if reissued else "",
            language=normalise_language(row.language) or batch.language,
        )
    )
    if len(chunk) >= MAX_CHUNK:
        flush(services, batch, target, plan)


def flush(services: Services, batch: BatchRecord, target: Target, plan: Plan) -> None:
    recipients = plan.open_chunks.pop(target, [])
    if not recipients:
        return
    chunk_no = plan.next_chunk
    plan.next_chunk += 1
    rows_key = work_key(batch.batch_id, f"chunks/{chunk_no:05d}.jsonl")
    record = ChunkRecord(
        batch_id=batch.batch_id,
        chunk_no=chunk_no,
        partner_name=target.partner_name,
        program_name=target.program_name,
        quantity=len(recipients),
        rows_key=rows_key,
        first_row=recipients[0].row_number,
        exams=plan.exams.get(target, []),
    )
    if plan.replay and not _replan_chunk(services, record):
        plan.chunk_numbers.append(chunk_no)
        return
    services.storage.put_recipients(rows_key, recipients)
    services.ledger.chunks.put_chunk_if_absent(record)
    plan.chunk_numbers.append(chunk_no)


def _replan_chunk(services: Services, record: ChunkRecord) -> bool:
    """On a replayed ingest: may this chunk's file and record be (re)written?

    A claim another batch held the first time may have been released since, so a replay can
    plan a chunk differently. A chunk nobody has taken yet (PENDING) is planned anew; one a
    worker took is kept exactly as it was bought, and must not have changed.
    """
    current = services.ledger.chunks.get_chunk(record.batch_id, record.chunk_no)
    if current is None:
        return True
    same = (current.quantity, current.first_row, current.program_name) == (
        record.quantity,
        record.first_row,
        record.program_name,
    )
    if current.state == ChunkState.PENDING:
        if not same:
            services.ledger.chunks.replace_pending_chunk(record)
        return True
    if not same:
        raise PlanChanged(
            f"chunk {record.batch_id}/{record.chunk_no:05d} is {current.state} for "
            f"{current.quantity} rows but would now hold {record.quantity}"
        )
    return False


def _rejection_metric(row: InputRow, target: Target | None, reason: str | None) -> str:
    """The reason class of a rejected row, as the name of its metric."""
    if row.problem is not None:
        return "RowsRejectedInvalid"  # malformed e-mail or row
    if target is None:
        return "RowsRejectedUnresolved"  # no partner/program to buy from
    if (reason or "").startswith("duplicate:"):
        return "RowsRejectedDuplicate"
    return "RowsRejectedIneligible"  # partner/program refused, or e-mail outside its domains


def _write_rejected(
    out: IO[str],
    row: InputRow,
    target: Target | None,
    reason: str,
    *,
    status: str = "rejected",
    reissue: bool = False,
) -> None:
    record = {
        "status": status,
        **_row_fields(row),
        "partner_name": target.partner_name if target else (row.partner_name or ""),
        "program_name": target.program_name if target else (row.program_name or ""),
        "reason": reason,
        "extra": row.extra,
        # A failed row that asked for a new voucher: ``retry-failed`` retries it as a reissue.
        **({"reissue": True} if reissue else {}),
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _row_fields(row: InputRow) -> dict[str, Any]:
    """The input row's own fields that a written row starts with."""
    return {
        "row_number": row.row_number,
        "line": row.line,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "external_id": row.external_id,
    }


def _write_existing(out: IO[str], accepted: Accepted, outcome: ClaimOutcome) -> None:
    """The row, and which batch row holds the person's voucher (resolved by the report)."""
    holding = outcome.holding
    assert holding is not None
    row = accepted.row
    record = {
        **_row_fields(row),
        "partner_name": accepted.target.partner_name,
        "program_name": accepted.target.program_name,
        "extra": row.extra,
        "holder_batch": holding.batch_id,
        "holder_row": holding.row_number,
        "claimed_at": holding.claimed_at,
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
