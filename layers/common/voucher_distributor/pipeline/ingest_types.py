"""What an ingest is given and answers, and the plan it builds: shared by ``ingest`` and
``ingest_plan`` (kept apart so neither imports the other)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from voucher_distributor.adapters.ledger.holdings import Claim, ClaimOutcome
from voucher_distributor.domain.chunking import (
    Target,
)
from voucher_distributor.domain.csv_input import CsvInputError, ReadTally
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.models.email import ProgramExam
from voucher_distributor.models.ledger import (
    BatchRecord,
    RecipientRecord,
)


@dataclass(frozen=True)
class IngestRequest:
    """Everything ingest needs to know about one input, whatever its kind."""

    batch: BatchRecord
    rows: Iterable[InputRow]
    metadata_partner: str | None = None
    metadata_program: str | None = None
    #: What reading ``rows`` skipped (blank lines), complete once they have been read.
    tally: ReadTally = field(default_factory=ReadTally)
    #: The last delivery of this input its queue will make before giving up: a Certiverse
    #: outage during pre-flight then fails the rows instead of sending the input back.
    final_attempt: bool = True
    #: Which delivery this is (1 the first time): picks the wait before the next one.
    attempt: int = 1
    #: The queue message that delivered it ("" when called directly): a later receive of the
    #: same message takes over the lease of an earlier one at once (that one has ended).
    message_id: str = ""


class InputTooLarge(CsvInputError):
    """More rows than ``MaxRecipientsPerBatch``: the input is refused whole."""


class IngestRetryLater(RuntimeError):
    """This delivery of the input ends without a result: its message comes back in
    ``retry_in`` seconds (its visibility), to be read again."""

    def __init__(self, message: str, *, retry_in: int) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class PreflightUnavailable(IngestRetryLater):
    """Certiverse was down during pre-flight: the input goes back to its queue to be read again.

    Nothing was bought and the claims were given back; the batch stays ``INGESTING`` and the
    next delivery, ``retry_in`` seconds later, plans it afresh. The last delivery fails the rows
    instead (``retry-failed``).
    """


class IngestBusy(IngestRetryLater):
    """Another delivery of the same input holds the batch's ingest lease (a repeat POST, an
    upload delivered twice), or took it from this one: this delivery changes nothing — no
    claim given back, no chunk dropped, no failure, no hand-out — and comes back later, when
    the batch is planned (``resume``) or the other's lease has run out."""


#: Accepted rows claimed together before they join their chunks: ten transactions of 100
#: claims, sent in parallel (the ledger's claim workers).
CLAIM_BATCH = 1000


@dataclass
class IngestOutcome:
    batch_id: str
    duplicate: bool = False
    failed: str | None = None
    rows: int = 0
    rejected: int = 0
    chunks: int = 0
    existing: int = 0
    failed_rows: int = 0


@dataclass(frozen=True, slots=True)
class Accepted:
    row: InputRow
    target: Target
    reissue: bool
    #: What the row is told beside its code (Certiverse's spelling of the names, if another).
    note: str = ""


@dataclass
class ClaimRound:
    """Up to CLAIM_BATCH rows whose claims are on their way to the ledger."""

    accepted: list[Accepted]
    claims: list[Claim]
    outcomes: Future[list[ClaimOutcome]]


@dataclass
class Plan:
    """Open chunks and counters while the input streams by."""

    rejected_file: IO[str]
    existing_file: IO[str]
    claims_file: IO[str]
    #: Sends a round of claims while the next rows are read (one round in flight at a time).
    claimer: ThreadPoolExecutor | None = None
    in_flight: ClaimRound | None = None
    replay: bool = False  # an earlier attempt at this batch was interrupted
    next_chunk: int = 0
    rows: int = 0
    rejected: int = 0
    existing: int = 0
    failed: int = 0
    to_buy: int = 0  # rows planned into chunks: the vouchers the batch buys
    pending: list[Accepted] = field(default_factory=list)
    #: On a replay: rows with a target that this attempt did not claim (their earlier claims,
    #: if any, are given back). Checked one by one: a replay is rare.
    unclaimed: list[Claim] = field(default_factory=list)
    open_chunks: dict[Target, list[RecipientRecord]] = field(default_factory=dict)
    chunk_numbers: list[int] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    #: Every partner and program a row named (defaults applied): the API's partner rule.
    partners: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    #: Rejected rows by reason class (metric name): a handful of billed metrics, no dimension.
    rejected_by_class: dict[str, int] = field(default_factory=dict)
    #: What each assigned row of a target is told (an enforced assignment: do it in the portal).
    notes: dict[Target, str] = field(default_factory=dict)
    #: The exams each target's voucher covers (its program's storeExams), for the e-mail.
    exams: dict[Target, list[ProgramExam]] = field(default_factory=dict)


class PlanChanged(RuntimeError):
    """A replayed ingest planned a chunk differently from one already being bought."""
