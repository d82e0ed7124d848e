"""The HTTP API for HR systems (API Gateway HTTP API, payload 2.0), on Powertools' resolver.

Every route authenticates first (Standard Webhooks signature or a bearer token), checks the
client's scope, and answers errors as ``application/problem+json`` listing every problem; an
unexpected error is a 500 problem with no detail (the log has it), never a stack trace.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from pydantic import ValidationError

from voucher_distributor.adapters.api_clients import ApiClientStore, ApiClientsUnreadable
from voucher_distributor.domain.api_auth import Caller, Forbidden, Unauthorized, authenticate
from voucher_distributor.domain.csv_input import CsvInputError, read_rows
from voucher_distributor.domain.emails import normalise_email
from voucher_distributor.models.api import Scope
from voucher_distributor.models.messages import ALLOW_LOOPBACK_CALLBACKS, DistributionRequest
from voucher_distributor.pipeline.decisions import DecisionRefused, decide_batch
from voucher_distributor.pipeline.distributions import (
    IdempotencyConflict,
    NotFound,
    NotReady,
    Submission,
    distribution_view,
    holdings_view,
    results_link,
    retry_distribution,
    submit_distribution,
)
from voucher_distributor.pipeline.requests import request_problems
from voucher_distributor.pipeline.retries import RetryRefused
from voucher_distributor.runtime import logger, metrics, services, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

PROBLEM_JSON = "application/problem+json"
app = APIGatewayHttpResolver()


class Problem(Exception):
    """An answer other than success: RFC 9457 problem details."""

    def __init__(
        self, status: int, title: str, detail: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.problems = status, title, detail, problems


@lru_cache(maxsize=1)
def _clients() -> ApiClientStore:
    settings = services().settings
    return ApiClientStore(
        settings.api_clients_secret_arn, max_age_s=settings.api_clients_cache_seconds
    )


def _caller(scope: Scope) -> Caller:
    event = app.current_event
    try:
        caller = authenticate(
            _clients().load(), dict(event.headers), _raw_body(), now=services().now()
        )
        caller.require(scope)
    except Unauthorized as exc:
        services().metrics.count("ApiRequestsUnauthorized")
        raise Problem(401, "Unauthorized", str(exc)) from exc
    except Forbidden as exc:
        services().metrics.count("ApiRequestsUnauthorized")
        raise Problem(403, "Forbidden", str(exc)) from exc
    logger.append_keys(api_client=caller.client_id)
    return caller


def _raw_body() -> bytes:
    event = app.current_event
    body = event.body or ""
    # Not Powertools' decoded_body: it decodes the bytes as UTF-8, and a CSV may be cp1252.
    return base64.b64decode(body) if event.is_base64_encoded else body.encode()


def _header(name: str) -> str | None:
    headers = app.current_event.headers or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _base_url() -> str:
    event = app.current_event
    scheme = _header("x-forwarded-proto") or "https"
    return f"{scheme}://{event.request_context.domain_name}"


# ------------------------------------------------------------------ routes


@app.post("/v1/distributions")
def post_distribution() -> Response[Any]:
    caller = _caller(Scope.SUBMIT)
    body = _raw_body()
    limit = services().settings.api_max_body_bytes
    if len(body) > limit:
        raise Problem(
            413,
            "Payload Too Large",
            f"the body is {len(body):,} bytes; the API takes up to {limit:,} — put a larger "
            "list in the inbox bucket (incoming/) or send recipientsS3Uri",
        )
    content_type = (_header("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        submission = _json_submission(body, caller)
    elif content_type in {"text/csv", "application/csv"}:
        submission = _csv_submission(body, caller)
    else:
        raise Problem(
            415,
            "Unsupported Media Type",
            "send Content-Type: application/json (a distribution request) or text/csv "
            "(recipients, with partner/program as query parameters)",
        )
    try:
        accepted = submit_distribution(services(), caller.client_id, submission)
    except IdempotencyConflict as exc:
        raise Problem(409, "Conflict", str(exc)) from exc
    status_url = f"{_base_url()}/v1/distributions/{quote(accepted.batch_id)}"
    logger.info(
        "distribution accepted",
        extra={"batch_id": accepted.batch_id, "repeat": accepted.repeat},
    )
    return Response(
        status_code=202,
        content_type="application/json",
        body=json.dumps(
            {
                "batchId": accepted.batch_id,
                "requestId": accepted.request_id,
                "statusUrl": status_url,
                "repeat": accepted.repeat,
            }
        ),
        headers={"Location": status_url},
    )


@app.get("/v1/distributions/<batch_id>")
def get_distribution(batch_id: str) -> dict[str, Any]:
    _caller(Scope.READ)
    return _found(lambda: distribution_view(services(), batch_id))


@app.get("/v1/distributions/<batch_id>/results")
def get_results(batch_id: str) -> dict[str, Any]:
    _caller(Scope.READ)
    try:
        return _found(lambda: results_link(services(), batch_id))
    except NotReady as exc:
        raise Problem(409, "Results Not Ready", str(exc)) from exc


@app.post("/v1/distributions/<batch_id>/retry")
def retry(batch_id: str) -> Response[str]:
    _caller(Scope.SUBMIT)
    try:
        started = retry_distribution(services(), batch_id)
    except RetryRefused as exc:
        raise Problem(404 if exc.missing else 409, "Not Found" if exc.missing else "Conflict",
                      str(exc)) from exc  # fmt: skip
    location = f"{_base_url()}{started.pop('statusPath')}"
    return Response(
        status_code=202,
        content_type="application/json",
        body=json.dumps({**started, "statusUrl": location}),
        headers={"Location": location},
    )


@app.post("/v1/distributions/<batch_id>/approve")
def approve(batch_id: str) -> dict[str, Any]:
    return _decide(batch_id, "approved")


@app.post("/v1/distributions/<batch_id>/reject")
def reject(batch_id: str) -> dict[str, Any]:
    return _decide(batch_id, "rejected")


@app.get("/v1/holdings")
def get_holdings() -> dict[str, Any]:
    _caller(Scope.READ)
    raw = (app.current_event.query_string_parameters or {}).get("email", "")
    email = normalise_email(raw)
    if not email or "@" not in email:
        raise Problem(
            422,
            "Unprocessable Content",
            "give the person's e-mail address: GET /v1/holdings?email=…",
            [{"field": "email", "problem": "required: an e-mail address"}],
        )
    return {"email": email, "holdings": holdings_view(services(), email)}


# ------------------------------------------------------------------ helpers


def _json_submission(body: bytes, caller: Caller) -> Submission:
    try:
        document = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, "Bad Request", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise Problem(400, "Bad Request", "the body must be a JSON object (a distribution)")
    if not document.get("requestId") and (key := _idempotency_key(caller)):
        document["requestId"] = key
    try:
        request = DistributionRequest.model_validate(document, context=_validation_context())
    except ValidationError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            "the distribution request is not valid; nothing was queued",
            request_problems(exc),
        ) from exc
    return Submission(request=request)


def _csv_submission(body: bytes, caller: Caller) -> Submission:
    query = app.current_event.query_string_parameters or {}
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
        "requestId": query.get("requestId") or _idempotency_key(caller),
        "partnerName": query.get("partner") or query.get("partnerName"),
        "programName": query.get("program") or query.get("programName"),
        "notes": query.get("notes") or "",
        "callbackUrl": query.get("callbackUrl"),
        "dryRun": (query.get("dryRun") or "").lower() in {"1", "true", "yes"},
        "recipientsS3Uri": "s3://pending/upload.csv",  # replaced by where the body is stored
    }
    request: DistributionRequest | None = None
    try:
        request = DistributionRequest.model_validate(
            {k: v for k, v in fields.items() if v}, context=_validation_context()
        )
    except ValidationError as exc:
        problems.extend(
            {"field": _query_name(p["field"]), "problem": p["problem"]}
            for p in request_problems(exc)
        )
    if problems or request is None:
        raise Problem(
            422, "Unprocessable Content", "the CSV distribution is not valid; nothing was queued",
            problems,
        )  # fmt: skip
    return Submission(request=request, csv_body=body)


def _query_name(field: str) -> str:
    return {
        "requestId": "requestId (query, or Idempotency-Key / webhook-id)",
        "partnerName": "partner",
        "programName": "program",
    }.get(field, field)


def _validation_context() -> dict[str, bool]:
    """Locally (``local up``), a callback may go to an http:// loopback receiver."""
    return {ALLOW_LOOPBACK_CALLBACKS: services().settings.callback_allow_loopback}


def _idempotency_key(caller: Caller) -> str | None:
    return (_header("idempotency-key") or "").strip() or caller.webhook_id


def _decide(batch_id: str, decision: str) -> dict[str, Any]:
    caller = _caller(Scope.APPROVE)
    note = None
    if body := _raw_body():
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Problem(400, "Bad Request", f"the body is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise Problem(400, "Bad Request", 'the body must be a JSON object: {"note": "…"}')
        note = str(document.get("note") or document.get("reason") or "")[:500] or None
    svc = services()
    try:
        batch = decide_batch(
            svc.ledger,
            lambda message: svc.queues.send(svc.settings.report_queue_url, message),
            batch_id,
            decision=decision,
            by=f"api:{caller.client_id}",
            at=svc.now(),
            note=note,
        )
    except DecisionRefused as exc:
        raise Problem(404 if exc.missing else 409, "Not Found" if exc.missing else "Conflict",
                      str(exc)) from exc  # fmt: skip
    return {
        "batchId": batch.batch_id,
        "decision": batch.approval_decision,
        "by": batch.approval_by,
        "note": batch.approval_note,
        "statusUrl": f"{_base_url()}/v1/distributions/{quote(batch.batch_id)}",
    }


def _found(read: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = read()
    except NotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from exc
    return result


# ------------------------------------------------------------------ errors


def _problem_response(status: int, title: str, detail: str, problems: Any = None) -> Response[str]:
    document: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                                "detail": detail}  # fmt: skip
    if problems:
        document["problems"] = problems
    return Response(status_code=status, content_type=PROBLEM_JSON, body=json.dumps(document))


@app.exception_handler(Problem)
def _on_problem(exc: Problem) -> Response[str]:
    return _problem_response(exc.status, exc.title, exc.detail, exc.problems)


@app.exception_handler(ApiClientsUnreadable)
def _on_clients_unreadable(exc: ApiClientsUnreadable) -> Response[str]:
    logger.error("API clients unreadable: %s", exc)
    return _problem_response(
        503, "Service Unavailable", "the API cannot check credentials right now; retry later"
    )


@app.not_found
def _on_not_found(_: Exception) -> Response[str]:
    event = app.current_event
    return _problem_response(
        404, "Not Found", f"no route {event.http_method} {event.path}; see the README's API"
    )


@app.exception_handler(Exception)
def _on_unexpected(_: Exception) -> Response[str]:
    logger.exception("unexpected error in the API")
    return _problem_response(
        500, "Internal Server Error", "the request could not be handled; it was logged"
    )


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
