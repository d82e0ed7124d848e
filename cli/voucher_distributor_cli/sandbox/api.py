"""The five operations of the Certiverse API document, as pure request -> response functions.

Kept apart from the socket handling (``server.py``) so that the rules read in one place: auth,
the at-least-one-filter rule, validation errors, the record-limit 422, ``nextLink`` pagination
and the $0-only purchase POST. Where the document is silent we answer the way an ASP.NET Core
API usually does (problem JSON, case-insensitive query names and routes, 415 without JSON).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlencode

from voucher_distributor.domain.eligibility import partner_is_active, purchase_refusal
from voucher_distributor.domain.emails import is_valid_email
from voucher_distributor.models.certiverse import (
    PartnerStatus,
    PurchaseStatus,
    VoucherPurchaseCreateCommand,
    parse_status,
)
from voucher_distributor_cli.sandbox.config import SandboxConfig
from voucher_distributor_cli.sandbox.store import SandboxStore, SearchResult

API_PREFIX = "/api"
PARTNERS_PATH = "/api/vouchers/partners"
PROGRAMS_PATH = "/api/vouchers/programs"
PURCHASES_PATH = "/api/vouchers/purchases"
VOUCHERS_PATH = "/api/vouchers"

MIN_QUANTITY = 1
MAX_QUANTITY = 1000
_MAX_PAGE = 2**31 - 1  # an Int32 on the real (.NET) side

_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    405: "https://tools.ietf.org/html/rfc9110#section-15.5.6",
    411: "https://tools.ietf.org/html/rfc9110#section-15.5.12",
    413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
    415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
    422: "https://tools.ietf.org/html/rfc9110#section-15.5.21",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}


@dataclass(frozen=True)
class ApiRequest:
    """What the HTTP layer hands over: the parsed request line, the body and two headers."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes = b""
    content_type: str | None = None
    authorization: str | None = None
    #: ``scheme://host[:port]`` as the client addressed us, for absolute ``nextLink`` URLs.
    origin: str = "http://127.0.0.1"


@dataclass
class ApiResponse:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)
    #: True when a purchase was created, so a post-commit fault may still lose the answer.
    committed: bool = False


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> ApiResponse:
    """An ASP.NET-style problem-details answer."""
    body: dict[str, object] = {"type": _PROBLEM_TYPES.get(status, "about:blank")}
    body["title"] = title
    body["status"] = status
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    body["traceId"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    return ApiResponse(status, body, dict(headers or {}))


def validation_problem(errors: dict[str, list[str]], detail: str | None = None) -> ApiResponse:
    """The 400 answer of ASP.NET model validation: messages grouped by field."""
    return problem(400, "One or more validation errors occurred.", detail, errors=errors)


def unauthorised(presented: bool) -> ApiResponse:
    challenge = 'Bearer error="invalid_token"' if presented else "Bearer"
    return problem(
        401,
        "Unauthorized",
        "A valid bearer token is required (Authorization: Bearer <token>).",
        headers={"WWW-Authenticate": challenge},
    )


class _Query:
    """Query parameters by case-insensitive name; the first value wins, blank means absent."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._first: dict[str, str] = {}
        for name, value in pairs:
            self._first.setdefault(name.casefold(), value)

    def text(self, name: str) -> str | None:
        value = self._first.get(name.casefold())
        if value is None or not value.strip():
            return None
        return value.strip()


@dataclass(frozen=True)
class _Context:
    store: SandboxStore
    config: SandboxConfig
    request: ApiRequest
    route: str
    query: _Query


Handler = Callable[[_Context], ApiResponse]


def handle_api(store: SandboxStore, config: SandboxConfig, request: ApiRequest) -> ApiResponse:
    """Answer one ``/api`` request (faults are the HTTP layer's business, not this one's)."""
    if not _authorised(store, request.authorization):
        return unauthorised(presented=bool(request.authorization))
    route = request.path.rstrip("/").casefold() or "/"
    methods = _ROUTES.get(route)
    if methods is None:
        return problem(404, "Not Found", f"No API operation at {request.path}.")
    handler = methods.get(request.method.upper())
    if handler is None:
        return problem(
            405,
            "Method Not Allowed",
            f"{request.method} is not supported on {route}.",
            headers={"Allow": ", ".join(sorted(methods))},
        )
    return handler(_Context(store, config, request, route, _Query(request.query)))


def _authorised(store: SandboxStore, header: str | None) -> bool:
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return scheme.casefold() == "bearer" and bool(token) and store.token_matches(token)


# ----------------------------------------------------------------------------- list helpers


def _page_number(query: _Query, errors: dict[str, list[str]]) -> int:
    raw = query.text("page")
    if raw is None:
        return 1
    digits = raw.removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or int(digits) > _MAX_PAGE:
        errors.setdefault("page", []).append(f"The value '{raw}' is not valid for page.")
        return 1
    page = int(digits)
    if page < 1:
        errors.setdefault("page", []).append("The field page must be 1 or greater.")
    return page


def _email_filter(query: _Query, name: str, errors: dict[str, list[str]]) -> str | None:
    value = query.text(name)
    if value is not None and not is_valid_email(value):
        errors.setdefault(name, []).append(f"The {name} field is not a valid e-mail address.")
    return value


def _bool_filter(query: _Query, name: str, errors: dict[str, list[str]]) -> bool | None:
    value = query.text(name)
    if value is None:
        return None
    folded = value.casefold()
    if folded not in ("true", "false"):
        errors.setdefault(name, []).append(f"The value '{value}' is not valid for {name}.")
        return None
    return folded == "true"


def _status_filter(query: _Query, enum: type[StrEnum], errors: dict[str, list[str]]) -> str | None:
    """The ``status`` filter's canonical spelling in ``enum``; None when absent or not valid."""
    value = query.text("status")
    if value is None:
        return None
    canonical = parse_status(value, enum)
    if canonical is None:
        errors.setdefault("status", []).append(
            f"The value '{value}' is not valid for status "
            f"(expected one of {', '.join(s.value for s in enum)})."
        )
    return canonical


def _filters(
    query: _Query, names: tuple[str, ...], email: str, errors: dict[str, list[str]]
) -> str | None:
    """A filtered list's rules: at least one of the filters ``names``, and its e-mail filter
    (``email``, one of them) an address. Returns that filter's value."""
    if all(query.text(name) is None for name in names):
        errors.setdefault("filter", []).append(
            "At least one filter is required: " + ", ".join(names) + "."
        )
    return _email_filter(query, email, errors)


def _list_answer(ctx: _Context, result: SearchResult, page: int) -> ApiResponse:
    limit = ctx.config.record_limit
    if result.total > limit:
        return problem(
            422,
            "Unprocessable Entity - Exceeded the 10,000 record limit",
            f"The query matches {result.total} records, more than the limit of {limit:,}; "
            "narrow the filters.",
        )
    body: dict[str, object] = {"data": result.items}
    if result.has_more:
        body["nextLink"] = _next_link(ctx, page + 1)
    return ApiResponse(200, body)


def _next_link(ctx: _Context, page: int) -> str:
    """The same filters (as the client sent them) plus the next page number."""
    pairs = [(k, v) for k, v in ctx.query.pairs if k.casefold() != "page"]
    pairs.append(("page", str(page)))
    relative = f"{ctx.route}?{urlencode(pairs)}"
    if ctx.config.next_link_style == "relative":
        return relative
    return ctx.request.origin + relative


# ----------------------------------------------------------------------------- operations


def _list_partners(ctx: _Context) -> ApiResponse:
    errors: dict[str, list[str]] = {}
    page = _page_number(ctx.query, errors)
    canonical = _status_filter(ctx.query, PartnerStatus, errors)
    status = None if canonical is None else PartnerStatus(canonical)
    if errors:
        return validation_problem(errors)
    result = ctx.store.search_partners(
        name=ctx.query.text("partnerName"),
        status=status,
        page=page,
        page_size=ctx.config.page_size,
    )
    return _list_answer(ctx, result, page)


def _list_programs(ctx: _Context) -> ApiResponse:
    errors: dict[str, list[str]] = {}
    page = _page_number(ctx.query, errors)
    if errors:
        return validation_problem(errors)
    result = ctx.store.search_programs(
        name=ctx.query.text("programName"), page=page, page_size=ctx.config.page_size
    )
    return _list_answer(ctx, result, page)


_PURCHASE_FILTERS = ("purchaseCode", "partnerName", "programName", "purchasedByEmail", "status")


def _list_purchases(ctx: _Context) -> ApiResponse:
    query = ctx.query
    errors: dict[str, list[str]] = {}
    page = _page_number(query, errors)
    email = _filters(query, _PURCHASE_FILTERS, "purchasedByEmail", errors)
    status = _status_filter(query, PurchaseStatus, errors)
    if errors:
        return validation_problem(errors)
    result = ctx.store.search_purchases(
        purchase_code=query.text("purchaseCode"),
        partner_name=query.text("partnerName"),
        program_name=query.text("programName"),
        purchased_by_email=email,
        status=status,
        page=page,
        page_size=ctx.config.page_size,
    )
    return _list_answer(ctx, result, page)


_VOUCHER_FILTERS = (
    "purchaseCode",
    "voucherCode",
    "recipientEmail",
    "isUsed",
    "isActive",
    "reservationCode",
    "storeExamCode",
)


def _list_vouchers(ctx: _Context) -> ApiResponse:
    query = ctx.query
    errors: dict[str, list[str]] = {}
    page = _page_number(query, errors)
    email = _filters(query, _VOUCHER_FILTERS, "recipientEmail", errors)
    is_used = _bool_filter(query, "isUsed", errors)
    is_active = _bool_filter(query, "isActive", errors)
    if errors:
        return validation_problem(errors)
    result = ctx.store.search_vouchers(
        purchase_code=query.text("purchaseCode"),
        voucher_code=query.text("voucherCode"),
        recipient_email=email,
        is_used=is_used,
        is_active=is_active,
        reservation_code=query.text("reservationCode"),
        store_exam_code=query.text("storeExamCode"),
        page=page,
        page_size=ctx.config.page_size,
    )
    return _list_answer(ctx, result, page)


def _create_purchase(ctx: _Context) -> ApiResponse:
    command = _parse_command(ctx.request)
    if isinstance(command, ApiResponse):
        return command
    partners = ctx.store.partners_named(command.partner_name)
    programs = ctx.store.programs_named(command.program_name)
    errors: dict[str, list[str]] = {}
    for field_name, kind, name, found in (
        ("PartnerName", "partner", command.partner_name, len(partners)),
        ("ProgramName", "program", command.program_name, len(programs)),
    ):
        if found == 0:
            errors[field_name] = [f"Voucher {kind} '{name}' was not found."]
        elif found > 1:
            errors[field_name] = [
                f"Voucher {kind} name '{name}' is ambiguous; use the exact name (with its case)."
            ]
    if errors:
        return validation_problem(errors)
    partner, program = partners[0], programs[0]
    refusal = purchase_refusal(program, partner)
    if refusal is not None:
        field_name = "PartnerName" if not partner_is_active(partner) else "ProgramName"
        return validation_problem({field_name: [refusal]}, detail=refusal)
    created = ctx.store.create_purchase(
        partner=partner, program=program, notes=command.notes, quantity=command.quantity
    )
    return ApiResponse(200, created, committed=True)


def _parse_command(request: ApiRequest) -> VoucherPurchaseCreateCommand | ApiResponse:
    """The body as a command, or the 415/400 answer that explains what is wrong with it."""
    media_type = (request.content_type or "").split(";")[0].strip().casefold()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return problem(
            415, "Unsupported Media Type", "The request body must be sent as application/json."
        )
    try:
        data = json.loads(request.body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return validation_problem({"$": ["The request body is not valid JSON."]})
    if not isinstance(data, dict):
        return validation_problem({"$": ["The request body must be a JSON object."]})
    fields = {str(key).casefold(): value for key, value in data.items()}

    errors: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for name in ("Notes", "PartnerName", "ProgramName"):
        value = fields.get(name.casefold())
        if value is None or (isinstance(value, str) and not value.strip()):
            errors[name] = [f"The {name} field is required."]
        elif not isinstance(value, str):
            errors[name] = [f"The {name} field must be a string."]
        else:
            texts[name] = value
    quantity = fields.get("quantity")
    if quantity is None:
        errors["Quantity"] = ["The Quantity field is required."]
    elif isinstance(quantity, bool) or not isinstance(quantity, int):
        errors["Quantity"] = ["The Quantity field must be an integer."]
    elif not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        errors["Quantity"] = [
            f"The field Quantity must be between {MIN_QUANTITY} and {MAX_QUANTITY}."
        ]
    if errors or not isinstance(quantity, int):
        return validation_problem(errors)
    return VoucherPurchaseCreateCommand(
        notes=texts["Notes"],
        partner_name=texts["PartnerName"].strip(),
        program_name=texts["ProgramName"].strip(),
        quantity=quantity,
    )


_ROUTES: dict[str, dict[str, Handler]] = {
    PARTNERS_PATH: {"GET": _list_partners},
    PROGRAMS_PATH: {"GET": _list_programs},
    PURCHASES_PATH: {"GET": _list_purchases, "POST": _create_purchase},
    VOUCHERS_PATH: {"GET": _list_vouchers},
}
