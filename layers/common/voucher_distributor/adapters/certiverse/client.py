"""HTTP client of the Certiverse Voucher Partner API (httpx + the pydantic models).

One instance holds one pooled ``httpx.Client``; build it once per process (module scope in a
Lambda handler) and reuse it across invocations.

Safety rules kept here:

* the bearer token is only ever sent to the configured origin (scheme, host and port), including
  when following ``nextLink``;
* reads are retried on timeouts, dropped connections, 429 and 5xx with jittered backoff honouring
  ``Retry-After``, within a bounded total time;
* the purchase POST has no idempotency key, so it is retried only when the request provably did
  not take effect (a refused connection or a 429); any other failure raises
  :class:`PurchaseOutcomeUnknown` and the caller must reconcile before buying again.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from voucher_distributor.adapters.certiverse.errors import (
    AmbiguousName,
    CertiverseBadRequest,
    CertiverseMisconfigured,
    CertiverseRecordLimitExceeded,
    CertiverseServerError,
    CertiverseUnauthorized,
    CertiverseValidationError,
    NameNotFound,
    PurchaseOutcomeUnknown,
    UnsafeNextLink,
)
from voucher_distributor.adapters.certiverse.retry import RetryPolicy, parse_retry_after
from voucher_distributor.adapters.certiverse.tokens import TokenProvider
from voucher_distributor.domain.emails import is_valid_email
from voucher_distributor.models.certiverse import (
    CertiverseModel,
    Page,
    PartnerStatus,
    PartnerVoucherModel,
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
    PartnerVoucherPurchaseModel,
    PurchaseStatus,
    VoucherPurchaseCreateCommand,
    parse_status,
)

_log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=CertiverseModel)

MAX_PURCHASE_QUANTITY = 1000
#: Explicit timeouts, well under any Lambda timeout: a hung call must not eat the invocation.
DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=15.0, write=10.0, pool=5.0)

_PARTNERS = "vouchers/partners"
_PROGRAMS = "vouchers/programs"
_PURCHASES = "vouchers/purchases"
_VOUCHERS = "vouchers"


class CertiverseClient:
    """Typed access to the five operations of the Voucher Partner API."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "voucher-distributor/0.1",
    ) -> None:
        base = httpx.URL(base_url.rstrip("/") + "/")
        if base.scheme not in {"http", "https"} or not base.host:
            raise CertiverseValidationError(
                f"the Certiverse base URL must be an http(s) URL, got {base_url!r}"
            )
        if base.path == "/":
            # The document writes every path as /api/vouchers/...: the host alone means that.
            base = base.join("api/")
        self._base = base
        self._tokens = tokens
        self._retry = retry or RetryPolicy()
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect could carry the token elsewhere
            headers={"Accept": "application/json", "User-Agent": user_agent},
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return str(self._base)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CertiverseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ partners

    def list_partners(
        self,
        *,
        partner_name: str | None = None,
        status: str | PartnerStatus | None = None,
        page: int = 1,
    ) -> Page[PartnerVoucherPartnerModel]:
        return self._get_page(_PARTNERS, self._partner_params(partner_name, status, page), _Partner)

    def iter_partners(
        self, *, partner_name: str | None = None, status: str | PartnerStatus | None = None
    ) -> Iterator[PartnerVoucherPartnerModel]:
        return self._iter_all(_PARTNERS, self._partner_params(partner_name, status, 1), _Partner)

    def find_partner(self, name: str) -> PartnerVoucherPartnerModel:
        """The partner named exactly ``name`` (case-insensitive); the API filter is partial."""
        wanted = _require_text(name, "partnerName")
        partial = list(self.iter_partners(partner_name=wanted))
        return _pick_exact(wanted, "partner", partial, self.iter_partners)

    # ------------------------------------------------------------------ programs

    def list_programs(
        self, *, program_name: str | None = None, page: int = 1
    ) -> Page[PartnerVoucherProgramModel]:
        return self._get_page(_PROGRAMS, self._program_params(program_name, page), _Program)

    def iter_programs(
        self, *, program_name: str | None = None
    ) -> Iterator[PartnerVoucherProgramModel]:
        return self._iter_all(_PROGRAMS, self._program_params(program_name, 1), _Program)

    def find_program(self, name: str) -> PartnerVoucherProgramModel:
        """The program named exactly ``name`` (case-insensitive); the API filter is partial."""
        wanted = _require_text(name, "programName")
        partial = list(self.iter_programs(program_name=wanted))
        return _pick_exact(wanted, "program", partial, self.iter_programs)

    # ------------------------------------------------------------------ purchases

    def list_purchases(
        self,
        *,
        purchase_code: str | None = None,
        partner_name: str | None = None,
        program_name: str | None = None,
        purchased_by_email: str | None = None,
        status: str | PurchaseStatus | None = None,
        page: int = 1,
    ) -> Page[PartnerVoucherPurchaseModel]:
        params = self._purchase_params(
            purchase_code, partner_name, program_name, purchased_by_email, status, page
        )
        return self._get_page(_PURCHASES, params, _PurchasePage)

    def iter_purchases(
        self,
        *,
        purchase_code: str | None = None,
        partner_name: str | None = None,
        program_name: str | None = None,
        purchased_by_email: str | None = None,
        status: str | PurchaseStatus | None = None,
    ) -> Iterator[PartnerVoucherPurchaseModel]:
        params = self._purchase_params(
            purchase_code, partner_name, program_name, purchased_by_email, status, 1
        )
        return self._iter_all(_PURCHASES, params, _PurchasePage)

    def iter_pair_purchases(
        self, *, partner_name: str, program_name: str, purchased_by_email: str | None = None
    ) -> Iterator[PartnerVoucherPurchaseModel]:
        """Every purchase of one partner/program pair (those ``purchased_by_email`` made, when
        the pair alone lists too many), however many there are.

        Without a status filter first, so purchases of a status we do not know are found. Over
        the API's 10,000-record limit (a 422) the listing is narrowed to the purchases of
        ``purchased_by_email`` (the API user: all ours), then, if still over, by status, one
        status at a time, as the seed documents. A 422 even then goes up
        (:class:`CertiverseRecordLimitExceeded`).
        """
        pair = {"partner_name": partner_name, "program_name": program_name}
        narrowings: list[dict[str, str]] = [{}]
        if purchased_by_email:
            narrowings.append({"purchased_by_email": purchased_by_email})
        for narrowing in narrowings:
            try:
                yield from self.iter_purchases(**pair, **narrowing)
            except CertiverseRecordLimitExceeded:
                continue
            return
        for status in PurchaseStatus:
            yield from self.iter_purchases(**pair, **narrowings[-1], status=status)

    def create_purchase(self, command: VoucherPurchaseCreateCommand) -> PartnerVoucherPurchaseModel:
        """POST a $0 purchase. Raises :class:`PurchaseOutcomeUnknown` when it may have happened."""
        _validate_purchase(command)
        response = self._send(
            "POST", self._base.join(_PURCHASES), json=command.to_wire(), idempotent=False
        )
        return _parse(PartnerVoucherPurchaseModel, response, self._base)

    # ------------------------------------------------------------------ vouchers

    def list_vouchers(
        self,
        *,
        purchase_code: str | None = None,
        voucher_code: str | None = None,
        recipient_email: str | None = None,
        is_used: bool | None = None,
        is_active: bool | None = None,
        reservation_code: str | None = None,
        store_exam_code: str | None = None,
        page: int = 1,
    ) -> Page[PartnerVoucherModel]:
        params = self._voucher_params(
            purchase_code, voucher_code, recipient_email, is_used, is_active,
            reservation_code, store_exam_code, page,
        )  # fmt: skip
        return self._get_page(_VOUCHERS, params, _Voucher)

    def iter_vouchers(
        self,
        *,
        purchase_code: str | None = None,
        voucher_code: str | None = None,
        recipient_email: str | None = None,
        is_used: bool | None = None,
        is_active: bool | None = None,
        reservation_code: str | None = None,
        store_exam_code: str | None = None,
    ) -> Iterator[PartnerVoucherModel]:
        params = self._voucher_params(
            purchase_code, voucher_code, recipient_email, is_used, is_active,
            reservation_code, store_exam_code, 1,
        )  # fmt: skip
        return self._iter_all(_VOUCHERS, params, _Voucher)

    # ------------------------------------------------------------------ parameters

    @staticmethod
    def _partner_params(
        partner_name: str | None, status: str | PartnerStatus | None, page: int
    ) -> dict[str, str]:
        params = _page_param(page)
        _put_text(params, "partnerName", partner_name)
        if status is not None:
            params["status"] = _known_status(status, PartnerStatus, "status")
        return params

    @staticmethod
    def _program_params(program_name: str | None, page: int) -> dict[str, str]:
        params = _page_param(page)
        _put_text(params, "programName", program_name)
        return params

    @staticmethod
    def _purchase_params(
        purchase_code: str | None,
        partner_name: str | None,
        program_name: str | None,
        purchased_by_email: str | None,
        status: str | PurchaseStatus | None,
        page: int,
    ) -> dict[str, str]:
        params = _page_param(page)
        _put_text(params, "purchaseCode", purchase_code)
        _put_text(params, "partnerName", partner_name)
        _put_text(params, "programName", program_name)
        if purchased_by_email is not None:
            params["purchasedByEmail"] = _valid_email(purchased_by_email, "purchasedByEmail")
        if status is not None:
            params["status"] = _known_status(status, PurchaseStatus, "status")
        _require_filter(
            params, "purchaseCode, partnerName, programName, purchasedByEmail or status"
        )
        return params

    @staticmethod
    def _voucher_params(
        purchase_code: str | None,
        voucher_code: str | None,
        recipient_email: str | None,
        is_used: bool | None,
        is_active: bool | None,
        reservation_code: str | None,
        store_exam_code: str | None,
        page: int,
    ) -> dict[str, str]:
        params = _page_param(page)
        _put_text(params, "purchaseCode", purchase_code)
        _put_text(params, "voucherCode", voucher_code)
        if recipient_email is not None:
            params["recipientEmail"] = _valid_email(recipient_email, "recipientEmail")
        _put_bool(params, "isUsed", is_used)
        _put_bool(params, "isActive", is_active)
        _put_text(params, "reservationCode", reservation_code)
        _put_text(params, "storeExamCode", store_exam_code)
        _require_filter(
            params,
            "purchaseCode, voucherCode, recipientEmail, isUsed, isActive, reservationCode "
            "or storeExamCode",
        )
        return params

    # ------------------------------------------------------------------ transport

    def _get_page(
        self, path: str, params: Mapping[str, str], model: type[Page[ModelT]]
    ) -> Page[ModelT]:
        return _parse(model, self._send("GET", self._base.join(path), params=params), self._base)

    def _iter_all(
        self, path: str, params: Mapping[str, str], model: type[Page[ModelT]]
    ) -> Iterator[ModelT]:
        """Every item of every page, following ``nextLink`` (absolute or relative)."""
        url = self._base.join(path).copy_merge_params(dict(params))
        seen: set[str] = set()
        while True:
            seen.add(str(url))
            page = _parse(model, self._send("GET", url), self._base)
            yield from page.data
            if not page.next_link:
                return
            url = self._follow(url, page.next_link)
            if str(url) in seen:
                raise CertiverseServerError(f"Certiverse pagination loops back to {url.path}")

    def _follow(self, current: httpx.URL, next_link: str) -> httpx.URL:
        target = current.join(next_link.strip())
        if (target.scheme, target.host, target.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            raise UnsafeNextLink(
                f"Certiverse returned a nextLink to {target.scheme}://{target.host}"
                f"{':' + str(target.port) if target.port else ''}, not the configured API "
                f"origin; refusing to send the token there"
            )
        return target

    def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        policy = self._retry
        started = policy.clock()
        token = self._tokens.get_token()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            failure: str
            retry_after: str | None = None
            status_code: int | None = None
            try:
                response = self._http.request(
                    method, url, params=params, json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )  # fmt: skip
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the server: safe to retry even a POST.
                failure = f"cannot connect to Certiverse ({type(exc).__name__})"
            except httpx.TransportError as exc:
                failure = f"Certiverse connection failed ({type(exc).__name__})"
                if not idempotent:
                    raise PurchaseOutcomeUnknown(
                        f"{failure} after the purchase was sent; it may have been created"
                    ) from exc
            else:
                status_code = response.status_code
                if response.is_success:
                    return response
                if status_code == 401 and not refreshed:
                    # The secret may have been rotated since we cached it: re-read it once.
                    refreshed = True
                    token = self._tokens.get_token(refresh=True)
                    attempt -= 1
                    continue
                _raise_for_final_status(response, idempotent=idempotent, base=self._base)
                failure = f"Certiverse answered {status_code}"
                retry_after = response.headers.get("Retry-After")
            wait = policy.delay(attempt, retry_after)
            elapsed = policy.clock() - started
            if (
                attempt >= policy.max_attempts
                or wait > policy.max_retry_after_s
                or elapsed + wait > policy.total_budget_s
            ):
                raise CertiverseServerError(
                    f"{failure}; gave up after {attempt} attempt(s) in {elapsed:.1f}s",
                    status_code=status_code,
                    retry_after_s=parse_retry_after(retry_after, now=datetime.now(UTC)),
                )
            _log.warning(
                "Certiverse %s %s: %s; retry %d in %.2fs", method, url.path, failure, attempt, wait
            )
            policy.sleep(wait)


# ---------------------------------------------------------------------- helpers

_Partner = Page[PartnerVoucherPartnerModel]
_Program = Page[PartnerVoucherProgramModel]
_Voucher = Page[PartnerVoucherModel]
_PurchasePage = Page[PartnerVoucherPurchaseModel]

_M = TypeVar("_M", bound=CertiverseModel)


def _parse(model: type[_M], response: httpx.Response, base: httpx.URL) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        if _json_or_none(response) is None:
            # An HTML page or plain text where the API answers JSON: not the API at all.
            kind = response.headers.get("content-type") or "non-JSON"
            raise CertiverseMisconfigured(
                f"{response.status_code} with a {kind} body, not the API's JSON",
                status_code=response.status_code,
                url=f"{response.request.method} {_without_query(response.request.url)}",
                base_url=str(base),
            ) from exc
        raise CertiverseServerError(
            f"Certiverse answered {response.request.url.path} with a body we cannot read: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} at "
            f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}",
            status_code=response.status_code,
        ) from exc


def _without_query(url: httpx.URL) -> str:
    return str(url.copy_with(query=None))


def _raise_for_final_status(response: httpx.Response, *, idempotent: bool, base: httpx.URL) -> None:
    """Raise the typed error of a failed response unless it is worth retrying."""
    status_code = response.status_code
    if status_code in {404, 405}:
        # No operation of the API answers 404/405 to a well-formed call: the path is wrong.
        raise CertiverseMisconfigured(
            f"{status_code} {response.reason_phrase}",
            status_code=status_code,
            url=f"{response.request.method} {_without_query(response.request.url)}",
            base_url=str(base),
        )
    if status_code == 401:
        raise CertiverseUnauthorized(_error_message(response))
    if status_code == 422:
        raise CertiverseRecordLimitExceeded(_error_message(response))
    if status_code >= 500 and not idempotent:
        raise PurchaseOutcomeUnknown(
            f"Certiverse answered {status_code} to the purchase POST; it may have been created",
            status_code=status_code,
        )
    if status_code != 429 and status_code < 500:
        raise CertiverseBadRequest(
            _error_message(response), status_code=status_code, body=_json_or_none(response)
        )


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    """The API's own words from an error body (problem JSON, {message}, or text)."""
    body = _json_or_none(response)
    if isinstance(body, dict):
        parts: list[str] = []
        for key in ("message", "title", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value and value not in parts:
                parts.append(value)
        errors = body.get("errors")
        if isinstance(errors, dict):
            for field, problems in errors.items():
                texts = problems if isinstance(problems, list) else [problems]
                parts.extend(f"{field}: {text}" for text in texts)
        elif isinstance(errors, list):
            parts.extend(str(e) for e in errors)
        if parts:
            return "; ".join(parts)
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase


def _page_param(page: int) -> dict[str, str]:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise CertiverseValidationError(f"page must be a whole number from 1, got {page!r}")
    return {"page": str(page)} if page != 1 else {}


def _put_text(params: dict[str, str], key: str, value: str | None) -> None:
    if value is None:
        return
    params[key] = _require_text(value, key)


def _put_bool(params: dict[str, str], key: str, value: bool | None) -> None:
    if value is None:
        return
    if not isinstance(value, bool):
        raise CertiverseValidationError(f"{key} must be true or false, got {value!r}")
    params[key] = "true" if value else "false"


def _require_text(value: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CertiverseValidationError(f"{key} must be a non-empty string")
    return value.strip()


def _valid_email(value: str, key: str) -> str:
    text = _require_text(value, key)
    if not is_valid_email(text):
        raise CertiverseValidationError(f"{key} is not a valid e-mail address")
    return text


def _known_status(value: str, enum: type[PartnerStatus] | type[PurchaseStatus], key: str) -> str:
    canonical = parse_status(str(value), enum)
    if canonical is None:
        allowed = ", ".join(member.value for member in enum)
        raise CertiverseValidationError(f"{key} must be one of {allowed}; got {value!r}")
    return canonical


def _require_filter(params: Mapping[str, str], names: str) -> None:
    if not set(params) - {"page"}:
        raise CertiverseValidationError(f"give at least one filter: {names}")


def _validate_purchase(command: VoucherPurchaseCreateCommand) -> None:
    for key, value in (
        ("notes", command.notes),
        ("partnerName", command.partner_name),
        ("programName", command.program_name),
    ):
        _require_text(value, key)
    quantity = command.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise CertiverseValidationError(f"quantity must be a whole number, got {quantity!r}")
    if not 1 <= quantity <= MAX_PURCHASE_QUANTITY:
        raise CertiverseValidationError(
            f"quantity must be from 1 to {MAX_PURCHASE_QUANTITY}, got {quantity}"
        )


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_NamedT = TypeVar("_NamedT", bound=_Named)


def _pick_exact(
    wanted: str,
    kind: str,
    candidates: list[_NamedT],
    every: Callable[[], Iterable[_Named]] | None = None,
) -> _NamedT:
    """The candidate named exactly ``wanted`` (ignoring case), else NameNotFound with the
    names it may have meant: the partial matches, and (looked up only then, through
    ``every``) the names within a few typos of it."""
    folded = wanted.casefold()
    exact = [c for c in candidates if c.name.strip().casefold() == folded]
    if len(exact) > 1:
        same_case = [c for c in exact if c.name.strip() == wanted]
        if len(same_case) == 1:
            return same_case[0]
        raise AmbiguousName(
            f"{len(exact)} {kind}s are named {wanted!r} (ignoring case); rename one in Certiverse "
            "or give the exact spelling"
        )
    if exact:
        return exact[0]
    close = close_names(wanted, [c.name for c in every()]) if every is not None else []
    hint = f" — did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    similar = sorted({c.name for c in candidates} - set(close))[:5]
    hint += f"; similar names: {', '.join(repr(s) for s in similar)}" if similar else ""
    raise NameNotFound(f"no Certiverse {kind} is named exactly {wanted!r}{hint}")


def close_names(wanted: str, names: Iterable[str], *, most: int = 3) -> list[str]:
    """The names within a few typos of ``wanted`` (ignoring case), closest first."""
    by_fold = {name.strip().casefold(): name for name in names}
    matches = difflib.get_close_matches(wanted.strip().casefold(), by_fold, n=most, cutoff=0.8)
    return [by_fold[match] for match in matches]
