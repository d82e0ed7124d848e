"""A posted body turned into what a use case takes, or a :class:`Problem` naming every fault.

``POST /v1/distributions`` takes the HR request as JSON, or a CSV of recipients with the rest as
query parameters (stored by the use case and named by ``recipientsS3Uri``). A decision
(``approve``/``reject``) may carry ``{"note": "…"}``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from voucher_distributor.api.problems import Problem
from voucher_distributor.api.request import ApiRequest
from voucher_distributor.domain.api_auth import Caller
from voucher_distributor.domain.csv_input import CsvInputError, read_rows
from voucher_distributor.domain.send_schedule import SendAtError, checked_send_at
from voucher_distributor.models.messages import ALLOW_LOOPBACK_CALLBACKS, DistributionRequest
from voucher_distributor.models.resend import ResendSelection
from voucher_distributor.pipeline.distributions import Submission
from voucher_distributor.pipeline.requests import request_problems

JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv", "application/csv"})
#: A decision's note is cut to this many characters.
NOTE_LIMIT = 500


def submission(
    request: ApiRequest, caller: Caller, *, limit: int, allow_loopback: bool
) -> Submission:
    """The distribution of a ``POST /v1/distributions`` body of at most ``limit`` bytes.

    ``allow_loopback``: locally (``local up``), a callback may go to an http:// loopback receiver.
    """
    body = request.raw_body
    if len(body) > limit:
        raise Problem(
            413,
            "Payload Too Large",
            f"the body is {len(body):,} bytes; the API takes up to {limit:,} — put a larger "
            "list in the inbox bucket (incoming/), or split it",
        )
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    context = {ALLOW_LOOPBACK_CALLBACKS: allow_loopback}
    if content_type in JSON_TYPES:
        return _json_submission(request, caller, context)
    if content_type in CSV_TYPES:
        return _csv_submission(request, caller, context)
    raise Problem(
        415,
        "Unsupported Media Type",
        "send Content-Type: application/json (a distribution request) or text/csv "
        "(recipients, with partner/program as query parameters)",
    )


def decision_note(request: ApiRequest) -> str | None:
    """The note of an approve/reject body (``note``, or ``reason``); no body, no note."""
    body = request.raw_body
    if not body:
        return None
    document = _json_object(body, 'the body must be a JSON object: {"note": "…"}')
    return str(document.get("note") or document.get("reason") or "")[:NOTE_LIMIT] or None


def resend_selection(request: ApiRequest) -> ResendSelection:
    """A resend's body: ``{"row": N}``, ``{"email": "…"}`` or ``{"status": "bounced"}``, with
    ``to`` (a corrected address) and ``force`` (a complained row)."""
    document = _json_object(
        request.raw_body or b"null", 'the body must be a JSON object: {"row": 12}'
    )
    try:
        return ResendSelection.model_validate(document)
    except ValidationError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "the resend is not valid; nothing was sent",
            request_problems(exc),
        ) from exc


def _json_submission(request: ApiRequest, caller: Caller, context: dict[str, bool]) -> Submission:
    document = _json_object(
        request.raw_body or b"null", "the body must be a JSON object (a distribution)"
    )
    if not document.get("requestId") and (key := _idempotency_key(request, caller)):
        document["requestId"] = key
    try:
        distribution = DistributionRequest.model_validate(document, context=context)
    except ValidationError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "the distribution request is not valid; nothing was queued",
            request_problems(exc),
        ) from exc
    _check_send_at(distribution, "the distribution request is not valid; nothing was queued")
    return Submission(request=distribution)


def _check_send_at(distribution: DistributionRequest, title: str) -> None:
    """A ``sendAt`` in the past or over 365 days ahead: refused before anything is queued."""
    try:
        checked_send_at(distribution.send_at, int(time.time()))
    except SendAtError as exc:
        raise Problem(
            422, "Unprocessable Content", title, [{"field": "sendAt", "problem": str(exc)}]
        ) from exc


def _csv_submission(request: ApiRequest, caller: Caller, context: dict[str, bool]) -> Submission:
    body, query = request.raw_body, request.query
    problems: list[dict[str, str]] = []
    # The pipeline's own reader (encodings, separators, column aliases): a body it would refuse
    # from its first rows is refused here, before anything is queued.
    try:
        first = next(read_rows([body]), None)
    except CsvInputError as exc:
        problems.append({"field": "(body)", "problem": str(exc)})
    else:
        if first is None:
            problems.append({"field": "(body)", "problem": "the CSV has no recipients"})
    fields = {
        "requestId": query.get("requestId") or _idempotency_key(request, caller),
        "partnerName": query.get("partner") or query.get("partnerName"),
        "programName": query.get("program") or query.get("programName"),
        "notes": query.get("notes") or "",
        "callbackUrl": query.get("callbackUrl"),
        "dryRun": (query.get("dryRun") or "").lower() in {"1", "true", "yes"},
        # ?sendEmail=false: mail nobody (the stack's SenderEmail otherwise mails every code).
        "sendEmail": (query.get("sendEmail") or "").lower() not in {"0", "false", "no"},
        # ?language=de: the e-mail's language for rows without a language column.
        "language": query.get("language") or "",
        # ?sendAt=2027-03-01T09:00:00Z: the e-mails wait until then.
        "sendAt": query.get("sendAt"),
        "recipientsS3Uri": "s3://pending/upload.csv",  # replaced by where the body is stored
    }
    distribution: DistributionRequest | None = None
    try:
        distribution = DistributionRequest.model_validate(
            {k: v for k, v in fields.items() if v or k == "sendEmail"}, context=context
        )
    except ValidationError as exc:
        problems.extend(
            {"field": _query_name(p["field"]), "problem": p["problem"]}
            for p in request_problems(exc)
        )
    if problems or distribution is None:
        raise Problem(
            422, "Unprocessable Content", "the CSV distribution is not valid; nothing was queued",
            problems,
        )  # fmt: skip
    _check_send_at(distribution, "the CSV distribution is not valid; nothing was queued")
    return Submission(request=distribution, csv_body=body)


def _json_object(body: bytes, not_an_object: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, "Bad Request", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise Problem(400, "Bad Request", not_an_object)
    return document


def _query_name(field: str) -> str:
    return {
        "requestId": "requestId (query, or Idempotency-Key / webhook-id)",
        "partnerName": "partner",
        "programName": "program",
    }.get(field, field)


def _idempotency_key(request: ApiRequest, caller: Caller) -> str | None:
    return (request.header("idempotency-key") or "").strip() or caller.webhook_id
