"""Each route's work: authenticate, check the scope, call one use case, shape the answer.

Every use case that touches a distribution takes the caller's :class:`Reach` (``call.reach``)
and applies the partner rule itself (``pipeline.access.reachable``): a new route passes it on,
and maps :class:`NotFound` to 404 (``_found``) and ``Denied`` to 403.

A route returns a JSON document (200) or an :class:`Answer`, and raises :class:`Problem` for
anything else; the handler maps both onto its resolver's responses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from voucher_distributor.adapters.api_clients import ApiClientStore
from voucher_distributor.api import bodies
from voucher_distributor.api.problems import Answer, Problem
from voucher_distributor.api.request import ApiRequest
from voucher_distributor.domain.api_auth import Caller, Forbidden, Unauthorized, authenticate
from voucher_distributor.domain.emails import normalise_email
from voucher_distributor.domain.tenancy import CHANNEL_API, Action, Reach
from voucher_distributor.models.api import Scope
from voucher_distributor.pipeline.access import (
    DENIED_METRIC,
    Denied,
    Replayed,
    reachable,
    remember_signature,
)
from voucher_distributor.pipeline.context import Services
from voucher_distributor.pipeline.decisions import DecisionRefused, decide_batch
from voucher_distributor.pipeline.distributions import (
    BadPage,
    IdempotencyConflict,
    NotFound,
    NotReady,
    UriRefused,
    assignments_page,
    distribution_view,
    holdings_view,
    results_link,
    retry_distribution,
    submit_distribution,
)
from voucher_distributor.pipeline.resend import BatchNotFound, ResendError, ask_resends
from voucher_distributor.pipeline.retries import RetryRefused


class ApiLog(Protocol):
    """What the routes need of the handler's logger (Powertools' ``Logger`` has it)."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> Any: ...

    def append_keys(self, **additional_keys: Any) -> None: ...


@dataclass(frozen=True)
class ApiCall:
    """One invocation: the process's services, the request, and the handler's logger."""

    services: Services
    request: ApiRequest
    log: ApiLog

    def caller(self, scope: Scope) -> Caller:
        """Who sent the request, allowed ``scope``: else a 401 or 403 problem. A signed
        request's ``webhook-id`` is remembered, bound to this request: another request under
        it is 401 "replayed"."""
        settings = self.services.settings
        clients = ApiClientStore(
            settings.api_clients_secret_arn, max_age_s=settings.api_clients_cache_seconds
        )
        try:
            caller = authenticate(
                clients.load(),
                dict(self.request.headers),
                self.request.raw_body,
                now=self.services.now(),
            )
            if caller.webhook_id is not None:
                remember_signature(
                    self.services,
                    webhook_id=caller.webhook_id,
                    client_id=caller.client_id,
                    method=self.request.method,
                    path=self.request.path,
                    query=self.request.raw_query,
                    body=self.request.raw_body,
                    signed_at=caller.signed_at or self.services.now(),
                )
            caller.require(scope)
        except (Unauthorized, Replayed) as exc:
            self.services.metrics.count("ApiRequestsUnauthorized")
            raise Problem(401, "Unauthorized", str(exc)) from exc
        except Forbidden as exc:
            self.services.metrics.count("ApiRequestsUnauthorized")
            raise Problem(403, "Forbidden", str(exc)) from exc
        self.log.append_keys(api_client=caller.client_id)
        return caller

    def reach(self, scope: Scope) -> tuple[Caller, Reach]:
        """The caller (as :meth:`caller`) and the partners and programs it reaches."""
        caller = self.caller(scope)
        return caller, Reach.of(caller.client_id, caller.client)

    def status_url(self, batch_id: str) -> str:
        return f"{self.request.base_url}/v1/distributions/{quote(batch_id)}"


def post_distribution(call: ApiCall) -> Answer:
    """``POST /v1/distributions``: 202 with the batch's status URL (also as ``Location``)."""
    caller, reach = call.reach(Scope.SUBMIT)
    settings = call.services.settings
    submission = bodies.submission(
        call.request,
        caller,
        limit=settings.api_max_body_bytes,
        allow_loopback=settings.callback_allow_loopback,
    )
    try:
        accepted = submit_distribution(call.services, reach, submission)
    except IdempotencyConflict as exc:
        raise Problem(409, "Conflict", str(exc)) from exc
    except Denied as exc:
        raise Problem(403, "Forbidden", str(exc)) from exc
    except UriRefused as exc:
        raise Problem(422, "Unprocessable Content", "the distribution request is not valid; "
                      "nothing was queued", [UriRefused.problem]) from exc  # fmt: skip
    status_url = call.status_url(accepted.batch_id)
    call.log.info(
        "distribution accepted",
        extra={"batch_id": accepted.batch_id, "repeat": accepted.repeat},
    )
    document = {
        "batchId": accepted.batch_id,
        "requestId": accepted.request_id,
        "statusUrl": status_url,
        "repeat": accepted.repeat,
    }
    return Answer(202, json.dumps(document), headers={"Location": status_url})


def get_distribution(call: ApiCall, batch_id: str) -> dict[str, Any]:
    _, reach = call.reach(Scope.READ)
    return _found(lambda: distribution_view(call.services, reach, batch_id))


def get_results(call: ApiCall, batch_id: str) -> dict[str, Any]:
    _, reach = call.reach(Scope.READ)
    try:
        return _found(lambda: results_link(call.services, reach, batch_id))
    except NotReady as exc:
        raise Problem(409, "Results Not Ready", str(exc)) from exc


def get_assignments(call: ApiCall, batch_id: str) -> dict[str, Any]:
    """``GET …/assignments?page=&pageSize=``: the rows as JSON, a page at a time."""
    _, reach = call.reach(Scope.READ)
    query = call.request.query
    try:
        page = _found(
            lambda: assignments_page(
                call.services, reach, batch_id, page=query.get("page"),
                page_size=query.get("pageSize"),
            )
        )  # fmt: skip
    except NotReady as exc:
        raise Problem(409, "Results Not Ready", str(exc)) from exc
    except BadPage as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from exc
    if page["nextLink"]:
        page["nextLink"] = f"{call.request.base_url}{page['nextLink']}"
    return page


def decide(call: ApiCall, batch_id: str, decision: str) -> dict[str, Any]:
    """``POST …/approve`` and ``…/reject``: recorded as ``api:<client>``."""
    caller, reach = call.reach(Scope.APPROVE)
    note = bodies.decision_note(call.request)
    svc = call.services
    _reachable(call, reach, batch_id, Action.DECIDE)
    try:
        batch = decide_batch(
            svc.ledger,
            lambda message: svc.queues.send(svc.settings.report_queue_url, message),
            batch_id,
            decision=decision,
            by=f"api:{caller.client_id}",
            at=svc.now(),
            note=note,
            deciders=(caller.client_id,),
            decider_channel=CHANNEL_API,
            approval_by_submitter=svc.settings.approval_by_submitter,
        )
    except DecisionRefused as exc:
        if exc.forbidden:  # who submitted it may not decide it (ApprovalBySubmitter=false)
            svc.metrics.count(DENIED_METRIC)
            call.log.warning(
                "API client %s may not decide batch %s: it submitted it", caller.client_id,
                batch_id,
            )  # fmt: skip
            raise Problem(403, "Forbidden", str(exc)) from exc
        raise Problem(404 if exc.missing else 409, "Not Found" if exc.missing else "Conflict",
                      str(exc)) from exc  # fmt: skip
    return {
        "batchId": batch.batch_id,
        "decision": batch.approval_decision,
        "by": batch.approval_by,
        "note": batch.approval_note,
        "statusUrl": call.status_url(batch.batch_id),
    }


def retry(call: ApiCall, batch_id: str) -> Answer:
    """``POST …/retry``: the ended batch's failed rows as a new batch linked from it."""
    _, reach = call.reach(Scope.SUBMIT)
    _reachable(call, reach, batch_id, Action.READ)
    try:
        started = retry_distribution(call.services, batch_id)
    except RetryRefused as exc:
        raise Problem(404 if exc.missing else 409, "Not Found" if exc.missing else "Conflict",
                      str(exc)) from exc  # fmt: skip
    started.pop("statusPath")
    location = call.status_url(started["batchId"])
    return Answer(
        202, json.dumps({**started, "statusUrl": location}), headers={"Location": location}
    )


def resend(call: ApiCall, batch_id: str) -> Answer:
    """``POST …/resend``: the same code mailed again (202), recorded as ``api:<client>``."""
    caller, reach = call.reach(Scope.SUBMIT)
    _reachable(call, reach, batch_id, Action.READ)
    selection = bodies.resend_selection(call.request)
    svc = call.services
    try:
        report = ask_resends(
            svc.ledger,
            lambda message: svc.queues.send(svc.settings.email_queue_url, message),
            batch_id,
            selection,
            by=f"api:{caller.client_id}",
            now=svc.now(),
            email_enabled=svc.settings.email_enabled,
        )
    except BatchNotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from exc
    except ResendError as exc:
        raise Problem(422, "Unprocessable Content", str(exc)) from exc
    document = {**report.as_dict(), "statusUrl": call.status_url(batch_id)}
    if not report.asked:
        reasons = "; ".join(f"row {row}: {why}" if row else why for row, why in report.refused)
        raise Problem(409, "Conflict", f"nothing was resent: {reasons}")
    call.log.info("resend asked", extra={"batch_id": batch_id, "rows": len(report.asked)})
    return Answer(202, json.dumps(document))


def get_holdings(call: ApiCall) -> dict[str, Any]:
    """``GET /v1/holdings?email=``: every code the person holds in the caller's partners."""
    _, reach = call.reach(Scope.READ)
    email = normalise_email(call.request.query.get("email", ""))
    if not email or "@" not in email:
        raise Problem(
            422,
            "Unprocessable Content",
            "give the person's e-mail address: GET /v1/holdings?email=…",
            [{"field": "email", "problem": "required: an e-mail address"}],
        )
    return {"email": email, "holdings": holdings_view(call.services, reach, email)}


def _reachable(call: ApiCall, reach: Reach, batch_id: str, action: Action) -> None:
    """404 unless ``reach`` may ``action`` the batch: another partner's batch does not exist
    for this client, as for reading it."""
    try:
        reachable(call.services, reach, batch_id, action)
    except NotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from exc


def _found(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return read()
    except NotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from exc
