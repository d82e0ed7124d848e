"""Client of the Certiverse Voucher Partner API: its five operations, typed (the pydantic models).

One instance holds one pooled ``httpx.Client``; build it once per process (module scope in a
Lambda handler) and reuse it across invocations. The requests themselves (the token, retries,
``nextLink`` paging, the typed errors of a failed response, and the safety rules that go with
them) are :class:`~voucher_distributor.adapters.certiverse.transport.CertiverseHttp`'s; here are
the endpoints, their parameters checked before anything is sent, and exact-name lookups.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypedDict, TypeVar, Unpack

from voucher_distributor.adapters.certiverse.errors import (
    AmbiguousName,
    CertiverseRecordLimitExceeded,
    CertiverseValidationError,
    NameNotFound,
)
from voucher_distributor.adapters.certiverse.tokens import TokenProvider
from voucher_distributor.adapters.certiverse.transport import CertiverseHttp, HttpOptions
from voucher_distributor.domain.emails import is_valid_email
from voucher_distributor.models.certiverse import (
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

MAX_PURCHASE_QUANTITY = 1000

_PARTNERS = "vouchers/partners"
_PROGRAMS = "vouchers/programs"
_PURCHASES = "vouchers/purchases"
_VOUCHERS = "vouchers"


class PurchaseFilters(TypedDict, total=False):
    """The filters of a purchase listing (at least one)."""

    purchase_code: str | None
    partner_name: str | None
    program_name: str | None
    purchased_by_email: str | None
    status: str | PurchaseStatus | None


class VoucherFilters(TypedDict, total=False):
    """The filters of a voucher listing (at least one)."""

    purchase_code: str | None
    voucher_code: str | None
    recipient_email: str | None
    is_used: bool | None
    is_active: bool | None
    reservation_code: str | None
    store_exam_code: str | None


class CertiverseClient:
    """Typed access to the five operations of the Voucher Partner API."""

    def __init__(
        self, base_url: str, tokens: TokenProvider, **options: Unpack[HttpOptions]
    ) -> None:
        self._http = CertiverseHttp(base_url, tokens, **options)

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return str(self._http.base)

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
        return self._http.get_page(
            _PARTNERS, self._partner_params(partner_name, status, page), _Partner
        )

    def iter_partners(
        self, *, partner_name: str | None = None, status: str | PartnerStatus | None = None
    ) -> Iterator[PartnerVoucherPartnerModel]:
        return self._http.iter_all(
            _PARTNERS, self._partner_params(partner_name, status, 1), _Partner
        )

    def find_partner(self, name: str) -> PartnerVoucherPartnerModel:
        """The partner named exactly ``name`` (case-insensitive); the API filter is partial."""
        wanted = _require_text(name, "partnerName")
        partial = list(self.iter_partners(partner_name=wanted))
        return _pick_exact(wanted, "partner", partial, self.iter_partners)

    # ------------------------------------------------------------------ programs

    def list_programs(
        self, *, program_name: str | None = None, page: int = 1
    ) -> Page[PartnerVoucherProgramModel]:
        return self._http.get_page(_PROGRAMS, self._program_params(program_name, page), _Program)

    def iter_programs(
        self, *, program_name: str | None = None
    ) -> Iterator[PartnerVoucherProgramModel]:
        return self._http.iter_all(_PROGRAMS, self._program_params(program_name, 1), _Program)

    def find_program(self, name: str) -> PartnerVoucherProgramModel:
        """The program named exactly ``name`` (case-insensitive); the API filter is partial."""
        wanted = _require_text(name, "programName")
        partial = list(self.iter_programs(program_name=wanted))
        return _pick_exact(wanted, "program", partial, self.iter_programs)

    # ------------------------------------------------------------------ purchases

    def list_purchases(
        self, *, page: int = 1, **filters: Unpack[PurchaseFilters]
    ) -> Page[PartnerVoucherPurchaseModel]:
        params = self._purchase_params(page, **filters)
        return self._http.get_page(_PURCHASES, params, _PurchasePage)

    def iter_purchases(
        self, **filters: Unpack[PurchaseFilters]
    ) -> Iterator[PartnerVoucherPurchaseModel]:
        return self._http.iter_all(_PURCHASES, self._purchase_params(1, **filters), _PurchasePage)

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
        return self._http.post(_PURCHASES, command.to_wire(), PartnerVoucherPurchaseModel)

    # ------------------------------------------------------------------ vouchers

    def list_vouchers(
        self, *, page: int = 1, **filters: Unpack[VoucherFilters]
    ) -> Page[PartnerVoucherModel]:
        return self._http.get_page(_VOUCHERS, self._voucher_params(page, **filters), _Voucher)

    def iter_vouchers(self, **filters: Unpack[VoucherFilters]) -> Iterator[PartnerVoucherModel]:
        return self._http.iter_all(_VOUCHERS, self._voucher_params(1, **filters), _Voucher)

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
        page: int,
        *,
        purchase_code: str | None = None,
        partner_name: str | None = None,
        program_name: str | None = None,
        purchased_by_email: str | None = None,
        status: str | PurchaseStatus | None = None,
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
        page: int,
        *,
        purchase_code: str | None = None,
        voucher_code: str | None = None,
        recipient_email: str | None = None,
        is_used: bool | None = None,
        is_active: bool | None = None,
        reservation_code: str | None = None,
        store_exam_code: str | None = None,
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


# ---------------------------------------------------------------------- helpers

_Partner = Page[PartnerVoucherPartnerModel]
_Program = Page[PartnerVoucherProgramModel]
_Voucher = Page[PartnerVoucherModel]
_PurchasePage = Page[PartnerVoucherPurchaseModel]


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
