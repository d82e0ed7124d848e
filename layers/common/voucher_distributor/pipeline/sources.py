"""Turn an upload or an HR request into an :class:`IngestRequest` (batch identity + rows)."""

from __future__ import annotations

from collections.abc import Iterator

from voucher_distributor.adapters.storage import ObjectMissing
from voucher_distributor.domain.batches import (
    DRY_RUN,
    DRY_RUN_PREFIX,
    RECIPIENTS_PREFIXES,
    csv_batch_id,
    dry_run_keys,
    request_batch_id,
    result_keys_for_request,
    result_keys_for_upload,
)
from voucher_distributor.domain.csv_input import CsvInputError, ReadTally, read_rows
from voucher_distributor.domain.email_templates import normalise_language
from voucher_distributor.domain.emails import email_problem, normalise_email
from voucher_distributor.domain.recipients import REISSUE_YES, InputRow
from voucher_distributor.domain.send_schedule import (
    PAST_GRACE_SECONDS,
    SCHEDULED,
    SendAtError,
    checked_send_at,
)
from voucher_distributor.domain.tenancy import CHANNEL_API, CHANNEL_QUEUE, CHANNEL_UPLOAD
from voucher_distributor.models.ledger import BatchRecord
from voucher_distributor.models.messages import DistributionRequest
from voucher_distributor.pipeline.context import Services
from voucher_distributor.pipeline.ingest_types import IngestRequest

#: Object metadata keys (x-amz-meta-*) that name the partner and program of a whole file.
PARTNER_METADATA_KEYS = ("partner", "partner-name", "partner_name", "partnername")
PROGRAM_METADATA_KEYS = ("program", "program-name", "program_name", "programname")
#: ``x-amz-meta-reissue: true``: every row of the file gets a new voucher.
REISSUE_METADATA_KEYS = ("reissue",)
#: ``x-amz-meta-mode: dry-run``: plan and report the file, buy nothing.
MODE_METADATA_KEYS = ("mode",)
#: ``x-amz-meta-send-email: false``: mail nobody (the stack's SenderEmail otherwise mails every
#: assigned code).
SEND_EMAIL_METADATA_KEYS = ("send-email", "send_email", "sendemail")
_NO = frozenset({"false", "no", "0", "off", "n"})
#: ``x-amz-meta-send-at: 2027-03-01T09:00:00Z``: the e-mails wait until then (sendAt).
SEND_AT_METADATA_KEYS = ("send-at", "send_at", "sendat")
#: ``x-amz-meta-retry-of: <batch id>``: the file holds another batch's failed rows (retry-failed).
RETRY_METADATA_KEYS = ("retry-of", "retry_of", "retryof")
#: ``x-amz-meta-language: de``: the e-mail's language for rows without a language column.
LANGUAGE_METADATA_KEYS = ("language", "lang")


def upload_request(
    services: Services, key: str, version: str | None, *, sender: str = ""
) -> IngestRequest | None:
    """The ingest request of an uploaded CSV, or None when the object is gone. ``sender``: the
    uploader's AWS principal, as the S3 notification names it."""
    storage = services.storage
    try:
        stored = storage.open(key, version_id=version)
    except ObjectMissing:
        return None
    batch_id = csv_batch_id(storage.bucket, key, stored.version)
    keys = result_keys_for_upload(key, batch_id)
    reissue = (_first(stored.metadata, REISSUE_METADATA_KEYS) or "").casefold()
    mode = (_first(stored.metadata, MODE_METADATA_KEYS) or "").casefold()
    dry_run = mode == DRY_RUN or key.startswith(DRY_RUN_PREFIX)
    if dry_run:
        keys = dry_run_keys(keys)
    batch = BatchRecord(
        batch_id=batch_id,
        kind="csv",
        source=f"s3://{storage.bucket}/{key}",
        input_name=key.rsplit("/", 1)[-1],
        results_csv_key=keys.results_csv,
        summary_key=keys.summary_json,
        created_at=services.now(),
        sender=sender[:200],
        channel=CHANNEL_UPLOAD,
        submitted_by=sender[:200],
        notes=f"voucher-distributor {key.rsplit('/', 1)[-1]}"[:200],
        reissue=reissue in REISSUE_YES,
        retry_of=_first(stored.metadata, RETRY_METADATA_KEYS),
        dry_run=dry_run,
        send_email=(_first(stored.metadata, SEND_EMAIL_METADATA_KEYS) or "").casefold() not in _NO,
        language=normalise_language(_first(stored.metadata, LANGUAGE_METADATA_KEYS)),
    )
    if batch.retry_of:
        batch = _as_retry_of(services, batch, batch.retry_of)
    batch, send_at_problem = _scheduled(
        services, batch, _first(stored.metadata, SEND_AT_METADATA_KEYS)
    )
    limit = services.settings.max_csv_bytes
    rows: Iterator[InputRow]
    tally = ReadTally()
    if send_at_problem:
        rows = _refuse(f"{send_at_problem} (object metadata send-at)")
    elif stored.size > limit:
        rows = _refuse(
            f"the file is {stored.size:,} bytes; the limit is {limit:,} — split it into "
            "smaller files"
        )
    else:
        rows = read_rows(stored.body, tally=tally)
    return IngestRequest(
        batch=batch,
        rows=rows,
        tally=tally,
        metadata_partner=_first(stored.metadata, PARTNER_METADATA_KEYS),
        metadata_program=_first(stored.metadata, PROGRAM_METADATA_KEYS),
    )


def _scheduled(
    services: Services, batch: BatchRecord, send_at: str | None
) -> tuple[BatchRecord, str | None]:
    """The batch with its ``sendAt`` (its e-mails then wait), or why the sendAt is refused."""
    if send_at is None or not send_at.strip():
        return batch, None
    now = services.now()
    earlier = services.ledger.batches.get_batch(batch.batch_id)
    if earlier is not None and earlier.send_at is not None:
        now = earlier.created_at  # a later delivery of the same input: checked on its first
    try:
        at = checked_send_at(send_at, now, grace=PAST_GRACE_SECONDS)
    except SendAtError as exc:
        return batch, str(exc)
    if at is None:
        return batch, None
    mails = batch.send_email and not batch.dry_run
    return batch.model_copy(
        update={"send_at": at, "send_state": SCHEDULED if mails else None}
    ), None


def _as_retry_of(services: Services, batch: BatchRecord, original_id: str) -> BatchRecord:
    """A retry answers where the original was asked: its callback URL, its HR requestId."""
    original = services.ledger.batches.get_batch(original_id)
    if original is None:
        return batch
    request_id = original.origin_request_id or (
        original.source if original.kind == "request" else None
    )
    return batch.model_copy(
        update={"callback_url": original.callback_url, "origin_request_id": request_id}
    )


def request_ingest(
    services: Services, request: DistributionRequest, *, sender: str = "", api_client: str = ""
) -> IngestRequest:
    """``sender``: the AWS principal that sent the SQS message (its ``SenderId``);
    ``api_client``: the HTTP API client it came from, when the API put it there."""
    batch_id = request_batch_id(request.request_id, dry_run=request.dry_run)
    keys = result_keys_for_request(request.request_id, batch_id)
    if request.dry_run:
        keys = dry_run_keys(keys)
    batch = BatchRecord(
        batch_id=batch_id,
        kind="request",
        source=request.request_id,
        input_name=request.request_id,
        results_csv_key=keys.results_csv,
        summary_key=keys.summary_json,
        created_at=services.now(),
        sender=(
            f"api client {api_client} (via {sender or 'the HTTP API'})" if api_client else sender
        )[:200],
        channel=CHANNEL_API if api_client else CHANNEL_QUEUE,
        submitted_by=(api_client or sender)[:200],
        notes=request.notes or f"voucher-distributor request {request.request_id}"[:200],
        callback_url=request.callback_url,
        dry_run=request.dry_run,
        send_email=request.send_email,
        language=normalise_language(request.language),
    )
    batch, send_at_problem = _scheduled(services, batch, request.send_at)
    rows: Iterator[InputRow]
    tally = ReadTally()
    if send_at_problem:
        rows = _refuse(send_at_problem)
    elif request.recipients_s3_uri:
        rows = _rows_from_s3(services, request.recipients_s3_uri, tally)
    elif request.recipients is not None and len(request.recipients) > (
        limit := services.settings.max_inline_recipients
    ):
        rows = _refuse(
            f"{len(request.recipients):,} inline recipients; the limit is {limit:,} — send a "
            "larger list as a CSV: the body itself over the HTTP API, or recipientsS3Uri "
            "under requests/ on the queue"
        )
    else:
        rows = _inline_rows(request)
    return IngestRequest(
        batch=batch,
        rows=rows,
        tally=tally,
        metadata_partner=request.partner_name,
        metadata_program=request.program_name,
    )


def _inline_rows(request: DistributionRequest) -> Iterator[InputRow]:
    if not request.recipients:
        raise CsvInputError("the request has no recipients and no recipientsS3Uri")
    for number, recipient in enumerate(request.recipients, start=1):
        email = normalise_email(recipient.email)
        problem = email_problem(email)
        valid = problem is None
        yield InputRow(
            row_number=number,
            email=email if valid else recipient.email.strip(),
            first_name=recipient.first_name,
            last_name=recipient.last_name,
            external_id=recipient.external_id,
            partner_name=None,
            program_name=None,
            extra={},
            problem=problem,
            reissue=recipient.reissue,
            language=recipient.language,
        )


def _rows_from_s3(services: Services, uri: str, tally: ReadTally) -> Iterator[InputRow]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if bucket != services.storage.bucket or not key.startswith(RECIPIENTS_PREFIXES):
        where = " or ".join(f"s3://{services.storage.bucket}/{p}" for p in RECIPIENTS_PREFIXES)
        raise CsvInputError(
            f"recipientsS3Uri must point into the inbox bucket, under {where} (put the CSV there)"
        )
    try:
        stored = services.storage.open(key)
    except ObjectMissing as exc:
        raise CsvInputError(str(exc)) from exc
    if stored.size > services.settings.max_csv_bytes:
        raise CsvInputError(f"{uri} is larger than {services.settings.max_csv_bytes:,} bytes")
    yield from read_rows(stored.body, tally=tally)


def _refuse(reason: str) -> Iterator[InputRow]:
    raise CsvInputError(reason)
    yield  # pragma: no cover - makes this a generator: the error surfaces while ingesting


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key, "").strip()
        if value:
            return value
    return None
