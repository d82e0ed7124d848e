"""Our own records: a batch, its chunks and one assignment per recipient (the DynamoDB ledger)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from voucher_distributor.models.email import ProgramExam


class BatchStatus(StrEnum):
    INGESTING = "INGESTING"  # reading the input; chunks are being planned
    #: Planned, but over ApprovalThreshold or the daily limit: nothing is bought until someone
    #: runs ``approve`` (then PLANNED) or ``reject`` / the timeout (then reported, nothing bought).
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    PLANNED = "PLANNED"  # every chunk is planned and handed to the purchase queue
    REPORTING = "REPORTING"  # every chunk ended; the report is being written
    DONE = "DONE"  # results written and announced
    FAILED = "FAILED"  # the input was unusable, or Certiverse could not be used; nothing bought


class ChunkState(StrEnum):
    PENDING = "PENDING"  # planned, not bought
    PURCHASING = "PURCHASING"  # a worker holds the lease and may be POSTing right now
    PURCHASED = "PURCHASED"  # the purchase exists; waiting for its codes
    ASSIGNED = "ASSIGNED"  # every recipient of the chunk has a code (final)
    FAILED = "FAILED"  # the chunk ended without codes; its rows are `failed` (final)


FINAL_CHUNK_STATES = frozenset({ChunkState.ASSIGNED, ChunkState.FAILED})


class LedgerModel(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)


class BatchRecord(LedgerModel):
    batch_id: str
    kind: str  # "csv" or "request"
    source: str  # s3://bucket/key or the request id
    input_name: str = ""
    results_csv_key: str
    summary_key: str
    status: BatchStatus = BatchStatus.INGESTING
    created_at: int
    finished_at: int | None = None
    chunk_count: int | None = None
    #: Numbers of the chunks that have ended: a DynamoDB number set, so counting a chunk twice
    #: (a replayed message, a worker that died after ending it) counts it once.
    finished_chunks: set[int] = Field(default_factory=set)
    rows_total: int = 0
    rows_rejected: int = 0
    #: Written by the report from the chunk records (``tally_chunks``); 0 until the batch is DONE.
    rows_assigned: int = 0
    rows_failed: int = 0
    purchases_created: int = 0
    purchases_adopted: int = 0
    notes: str = ""
    callback_url: str | None = None
    error: str | None = None
    extra_columns: list[str] = Field(default_factory=list)
    #: Rows whose person already held a voucher (``existing``) and rows that failed before any
    #: purchase (Certiverse unusable during pre-flight); set when ingest ends.
    rows_existing: int = 0
    rows_failed_early: int = 0
    #: The whole input asks for new vouchers (object metadata ``reissue: true``).
    reissue: bool = False
    #: Blank lines the CSV reader skipped (they take a row number but yield no row).
    blank_lines: int = 0
    #: The input CSV's delimiter: the results file is written with it (``,`` for requests).
    results_delimiter: str = ","
    #: The input itself was unusable (no e-mail column, not a CSV, too many rows): the
    #: sender's to fix, so the batch is reported ``rejected`` (``FAILED`` in the ledger).
    input_rejected: bool = False
    #: A dry run: planned and reported (``would-assign``), never bought, nothing claimed.
    dry_run: bool = False
    #: Who sent the input (the uploader's or the SQS sender's AWS principal), when known.
    sender: str = ""
    #: Which door it came in by (``api``, ``queue``, ``upload``) and who used it: the API
    #: client's id, or the SQS sender's or uploader's AWS principal (``domain.tenancy``).
    channel: str = ""
    submitted_by: str = ""
    #: Every partner and program the input was planned for (the API's partner rule reads them).
    partners: list[str] = Field(default_factory=list)
    programs: list[str] = Field(default_factory=list)
    #: Vouchers the plan buys (rows in chunks), set with the plan.
    vouchers_planned: int = 0
    #: Why the batch waits for approval, until when, and the decision taken on it.
    approval_reason: str | None = None
    approval_deadline: int | None = None
    approval_decision: str | None = None  # "approved" or "rejected"
    approval_by: str | None = None  # an AWS identity (ARN), or "timeout"
    approval_at: int | None = None
    approval_note: str | None = None  # the reject --reason
    #: A dry run's input would wait for approval if sent for real: why.
    would_wait: str | None = None
    #: The UTC day whose daily count this batch's vouchers went into.
    counted_day: str | None = None
    #: The delivery ingesting the batch now, and until when (a lease, as purchases have): no
    #: other delivery plans, gives back, fails or hands out the batch meanwhile.
    ingest_owner: str | None = None
    ingest_lease_until: int | None = None
    #: A Certiverse outage during pre-flight sent the input back: when its next delivery comes
    #: (epoch seconds), after how long, and which delivery met the outage.
    preflight_retry_at: int | None = None
    preflight_retry_in: int | None = None
    preflight_attempt: int | None = None
    #: ``retry-failed``: the batch whose failed rows this one retries, and the reverse links.
    retry_of: str | None = None
    retried_by: list[str] = Field(default_factory=list)
    #: A retry of an HR request's batch: that request's ``requestId``. Its callbacks go to the
    #: original's ``callbackUrl`` (copied into ``callback_url``) under it.
    origin_request_id: str | None = None
    #: Mail each assigned code to its person (when the stack has a SenderEmail). Off for an
    #: input that opts out: request ``sendEmail: false``, object metadata ``send-email: false``.
    send_email: bool = True
    #: The results are rewritten with the e-mail states no sooner than this (once a minute).
    email_refresh_due: int | None = None
    #: Seconds between two rewrites when the last one was slow (see pipeline.email's
    #: refresh_window); None: EMAIL_REFRESH_SECONDS.
    email_refresh_window: int | None = None
    #: The e-mail's language for rows that name none (request ``language``, object metadata
    #: ``language``); "": the stack's DefaultLanguage.
    language: str = ""
    #: A scheduled send (``sendAt``, epoch seconds): the e-mails wait until then. ``send_state``
    #: is ``scheduled``, ``fired`` or ``cancelled`` (``domain.send_schedule``); the schedule's
    #: name; when and by whom it fired (``schedule`` or an identity: ``send-now``); a by-hand
    #: change (``send-now`` / ``cancel-send``), who made it and when.
    send_at: int | None = None
    send_state: str | None = None
    send_schedule: str | None = None
    send_fired_at: int | None = None
    send_fired_by: str | None = None
    send_changed: str | None = None
    send_changed_by: str | None = None
    send_changed_at: int | None = None

    @property
    def chunks_finished(self) -> int:
        return len(self.finished_chunks)


class ChunkRecord(LedgerModel):
    batch_id: str
    chunk_no: int
    partner_name: str
    program_name: str
    quantity: int
    rows_key: str  # S3 key of the chunk's recipients (JSON lines)
    first_row: int | None = None  # the chunk's lowest row number (the report merges by it)
    state: ChunkState = ChunkState.PENDING
    lease_owner: str | None = None
    lease_until: int | None = None
    purchase_attempts: int = 0
    purchase_code: str | None = None
    purchase_id: str | None = None
    purchased_at: int | None = None
    deadline_at: int | None = None
    poll_attempts: int = 0
    #: The live poll chain: the attempt and token of the poll message last handed over. A poll
    #: message carrying another token is a duplicate chain's, and is dropped.
    poll_attempt: int | None = None
    poll_token: str | None = None
    adopted: bool = False
    failure_reason: str | None = None
    assigned_count: int = 0  # set when the chunk ends
    failed_count: int = 0
    #: A failed chunk's vouchers were taken off this day's count (once).
    count_given_back: str | None = None
    #: The exams the program's voucher covers (its ``storeExams``), for the voucher e-mail.
    exams: list[ProgramExam] = Field(default_factory=list)


class RecipientRecord(LedgerModel):
    """One accepted recipient as planned into a chunk (stored in the chunk's S3 file)."""

    row_number: int
    email: str
    first_name: str = ""
    last_name: str = ""
    external_id: str = ""
    extra: dict[str, str] = Field(default_factory=dict)
    #: The line of the input file the row starts on (None: an HR request's inline recipient).
    line: int | None = None
    #: Said in the row's reason once it is assigned (e.g. a reissue naming the previous code).
    note: str = ""
    #: The row's claim replaced a voucher the person held (a reissue): giving it back restores it.
    reissue: bool = False
    #: The code a reissue replaces, when known: the e-mail says the new one replaces it.
    replaces_code: str = ""
    #: The e-mail's language (the row's, else its input's; "": the stack's DefaultLanguage).
    language: str = ""


class RedemptionRecord(LedgerModel):
    """What Certiverse says of one handed-out code, as the redemption sync last saw it.

    Kept on the code's assignment item, which the person's holding points at: ``find``,
    ``voucher`` and the redemption reports read it there.
    """

    state: str  # unused, reserved, used, expired or inactive (domain.redemption)
    active: bool = True
    used_at: str = ""  # ISO 8601 UTC
    reservation_code: str = ""
    reservation_status: str = ""
    expires_utc: str = ""
    #: The e-mail Certiverse holds for the code (assigned in its portal), if any.
    certiverse_email: str = ""
    #: Certiverse holds another e-mail than the person we gave the code to.
    email_mismatch: bool = False
    synced_at: int | None = None  # the sync that last changed the record
    #: When the code was announced as expiring (once per code; a conditional write).
    expiry_noticed_at: int | None = None

    def facts(self) -> tuple[object, ...]:
        """What Certiverse told, without our bookkeeping: a write happens when these change."""
        return (
            self.state,
            self.active,
            self.used_at,
            self.reservation_code,
            self.reservation_status,
            self.expires_utc,
            self.certiverse_email,
            self.email_mismatch,
        )


class TrackedPurchase(LedgerModel):
    """A purchase whose codes the redemption sync follows until every one is settled."""

    purchase_code: str
    batch_id: str
    chunk_no: int
    partner_name: str
    program_name: str
    #: The batch rows that got this purchase's codes (their assignment items).
    rows: list[int] = Field(default_factory=list)
    tracked_at: int
    synced_at: int | None = None
    #: Counts by state at the last sync (the dashboard's and the reports' totals).
    counts: dict[str, int] = Field(default_factory=dict)
    settled_at: int | None = None


class AssignmentRecord(LedgerModel):
    """The outcome for one recipient: the code it was given, or why it got none."""

    batch_id: str
    row_number: int
    email: str
    first_name: str = ""
    last_name: str = ""
    external_id: str = ""
    partner_name: str
    program_name: str
    chunk_no: int
    status: str  # "assigned" or "failed"
    voucher_code: str = ""
    purchase_code: str = ""
    expires_utc: str = ""
    reason: str = ""
    extra: dict[str, str] = Field(default_factory=dict)
    #: The line of the input file the row starts on (results file only, not the table).
    line: int | None = None
    #: What Certiverse says of the code since the hand-out (the redemption sync; table only).
    redemption: RedemptionRecord | None = None
    #: The code a reissue replaced (outcome file only: the e-mail names it).
    replaces_code: str = ""
    #: The e-mail's language (outcome file only: the template is chosen by it).
    language: str = ""


class PreviousHolding(LedgerModel):
    """A voucher a person held before a reissue replaced it."""

    batch_id: str
    row_number: int
    voucher_code: str = ""
    purchase_code: str = ""
    replaced_at: int
    replaced_by: str  # the batch that reissued


class HoldingRecord(LedgerModel):
    """A person's claim on one voucher of a (partner, program): at most one per person.

    Made (conditionally) at ingest, before anything is bought, and pointing at the batch row that
    gets or got the code: the code itself lives in that row's assignment item, so a claim costs
    one write and the outcome one more. ``history`` keeps what earlier reissues replaced.
    """

    email: str
    partner_name: str
    program_name: str
    batch_id: str
    row_number: int
    claimed_at: int
    history: list[PreviousHolding] = Field(default_factory=list)


class ApiRequestRecord(LedgerModel):
    """What the HTTP API answered for one idempotency key: the same key with the same body is
    answered with the same batch; with another body (or from another client), 409."""

    idempotency_key: str
    client_id: str
    body_sha256: str
    batch_id: str
    accepted_at: int
    #: DynamoDB TTL: senders retry for a day or so; the record outlives that by weeks.
    expires_at: int
    #: The partners and programs the submission named (defaults applied), checked at the door.
    partners: list[str] = Field(default_factory=list)
    programs: list[str] = Field(default_factory=list)


class SignatureUse(LedgerModel):
    """An accepted ``webhook-id``, remembered for the signature window, bound to the request
    it signed: the same id on another route, with another query or body is a replay."""

    webhook_id: str
    client_id: str
    method: str
    path: str
    query: str
    body_sha256: str
    used_at: int
    #: DynamoDB TTL: past the timestamp window the signature is refused as stale anyway.
    expires_at: int

    def binding(self) -> tuple[str, str, str, str, str]:
        return (self.client_id, self.method, self.path, self.query, self.body_sha256)


class DeliveryState(StrEnum):
    PENDING = "pending"  # an attempt is due (now or at next_attempt_at)
    DELIVERED = "delivered"  # the receiver answered 2xx (final)
    FAILED = "failed"  # the attempts ran out, or the receiver refused for good (final)


class CallbackAttempt(LedgerModel):
    """One POST of a callback: when, what came back (an HTTP status, or the error's name)."""

    at: int
    status: int | str
    latency_ms: int = 0
    #: Which redelivery the attempt belongs to (0: the first; ``redeliver`` adds one).
    round: int = 0


class CallbackDelivery(LedgerModel):
    """The outbox entry of one event of a batch for its callback URL (one per event).

    The body is stored as sent, so every attempt (and a redelivery) sends the same bytes under
    the same ``webhook_id``; only the timestamp and signatures are made per attempt.
    """

    batch_id: str
    slug: str  # the event's short name, the item's key under the batch
    webhook_id: str
    event: str  # the EventBridge detail-type
    url: str
    body: str
    state: DeliveryState = DeliveryState.PENDING
    created_at: int
    #: Attempts of the current round so far, and every attempt of every round.
    round: int = 0
    tries: int = 0
    attempts: list[CallbackAttempt] = Field(default_factory=list)
    next_attempt_at: int | None = None
    finished_at: int | None = None
    #: The worker sending an attempt right now, until when (two never send the same attempt).
    lease_owner: str | None = None
    lease_until: int | None = None
    #: Why the delivery stopped (the last error, or the permanent answer).
    reason: str | None = None
