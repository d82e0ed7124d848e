"""The HTTP API for HR systems (API Gateway HTTP API, payload 2.0), on Powertools' resolver.

Every route authenticates first (Standard Webhooks signature or a bearer token), checks the
client's scope, and answers errors as ``application/problem+json`` listing every problem; an
unexpected error is a 500 problem with no detail (the log has it), never a stack trace. What
each route does is in the layer (``voucher_distributor.api``); here: the resolver, the routes,
and the event read into an :class:`ApiRequest`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from voucher_distributor.adapters.api_clients import ApiClientsUnreadable
from voucher_distributor.api import problems, routes
from voucher_distributor.api.problems import Answer, Problem
from voucher_distributor.api.request import ApiRequest
from voucher_distributor.runtime import logger, metrics, services, tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

app = APIGatewayHttpResolver()


def _call() -> routes.ApiCall:
    event = app.current_event
    request = ApiRequest(
        headers=dict(event.headers or {}),
        body=event.body or "",
        base64_encoded=bool(event.is_base64_encoded),
        query=event.query_string_parameters or {},
        domain_name=event.request_context.domain_name,
        method=event.request_context.http.method,
        path=event.raw_path,
        raw_query=event.raw_query_string or "",
    )
    return routes.ApiCall(services(), request, logger)


def _respond(answer: Answer) -> Response[str]:
    return Response(
        status_code=answer.status,
        content_type=answer.content_type,
        body=answer.body,
        headers=answer.headers or None,
    )


# ------------------------------------------------------------------ routes


@app.post("/v1/distributions")
def post_distribution() -> Response[str]:
    return _respond(routes.post_distribution(_call()))


@app.get("/v1/distributions/<batch_id>")
def get_distribution(batch_id: str) -> dict[str, Any]:
    return routes.get_distribution(_call(), batch_id)


@app.get("/v1/distributions/<batch_id>/results")
def get_results(batch_id: str) -> dict[str, Any]:
    return routes.get_results(_call(), batch_id)


@app.post("/v1/distributions/<batch_id>/retry")
def retry(batch_id: str) -> Response[str]:
    return _respond(routes.retry(_call(), batch_id))


@app.get("/v1/distributions/<batch_id>/assignments")
def get_assignments(batch_id: str) -> dict[str, Any]:
    return routes.get_assignments(_call(), batch_id)


@app.post("/v1/distributions/<batch_id>/approve")
def approve(batch_id: str) -> dict[str, Any]:
    return routes.decide(_call(), batch_id, "approved")


@app.post("/v1/distributions/<batch_id>/reject")
def reject(batch_id: str) -> dict[str, Any]:
    return routes.decide(_call(), batch_id, "rejected")


@app.post("/v1/distributions/<batch_id>/resend")
def resend(batch_id: str) -> Response[str]:
    return _respond(routes.resend(_call(), batch_id))


@app.get("/v1/holdings")
def get_holdings() -> dict[str, Any]:
    return routes.get_holdings(_call())


# ------------------------------------------------------------------ errors


@app.exception_handler(Problem)
def _on_problem(exc: Problem) -> Response[str]:
    return _respond(exc.answer())


@app.exception_handler(ApiClientsUnreadable)
def _on_clients_unreadable(exc: ApiClientsUnreadable) -> Response[str]:
    logger.error("API clients unreadable: %s", exc)
    return _respond(problems.clients_unreadable())


@app.not_found
def _on_not_found(_: Exception) -> Response[str]:
    event = app.current_event
    return _respond(problems.no_route(event.http_method, event.path))


@app.exception_handler(Exception)
def _on_unexpected(_: Exception) -> Response[str]:
    logger.exception("unexpected error in the API")
    return _respond(problems.unexpected())


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
