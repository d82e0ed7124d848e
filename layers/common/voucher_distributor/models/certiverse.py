"""Pydantic models of the Certiverse Voucher Partner API, named as the API document names them.

The models are the schema: the client parses responses with them, the sandbox serialises with
them and the domain reasons over them. Field names are snake_case in Python and camelCase on the
wire (aliases). Fields the document marks nullable are optional; unknown extra fields are kept
(``extra="allow"``) so that an API that grows a field never breaks a parse.

Status strings are parsed tolerantly: a known value is normalised to its canonical spelling, an
unknown one is logged and kept as it came, never rejected.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

_log = logging.getLogger(__name__)


class PartnerStatus(StrEnum):
    """Partner statuses. The document prints them run together: ``ActiveArchivedInactive``."""

    ACTIVE = "Active"
    ARCHIVED = "Archived"
    INACTIVE = "Inactive"


class PurchaseStatus(StrEnum):
    """Purchase statuses, read from the run-together list in the document (see DESIGN.md)."""

    CHECKOUT_CANCELLED = "CheckoutCancelled"
    CHECKOUT_EXPIRED = "CheckoutExpired"
    CHECKOUT_FAILED = "CheckoutFailed"
    CHECKOUT_IN_PROGRESS = "CheckoutInProgress"
    COMPLETE = "Complete"
    VOUCHER_CREATION = "VoucherCreation"


#: Purchase statuses after which no voucher will ever be generated.
FAILED_PURCHASE_STATUSES = frozenset(
    {
        PurchaseStatus.CHECKOUT_CANCELLED,
        PurchaseStatus.CHECKOUT_EXPIRED,
        PurchaseStatus.CHECKOUT_FAILED,
    }
)


def _tolerant(enum: type[StrEnum]) -> BeforeValidator:
    """Normalise a known status to its canonical spelling; keep and log an unknown one."""
    canonical = {member.value.casefold(): member.value for member in enum}

    def parse(value: object) -> object:
        if not isinstance(value, str):
            return value
        known = canonical.get(value.strip().casefold())
        if known is None:
            _log.warning("unknown %s value from Certiverse kept as-is: %r", enum.__name__, value)
            return value
        return known

    return BeforeValidator(parse)


#: A purchase status: one of :class:`PurchaseStatus` values, or an unknown string kept verbatim.
PurchaseStatusValue = Annotated[str, _tolerant(PurchaseStatus)]
#: A partner-user status (the document's example values are Active and Inactive).
PartnerStatusValue = Annotated[str, _tolerant(PartnerStatus)]


def parse_status(value: str, enum: type[StrEnum]) -> str | None:
    """Return the canonical spelling of ``value`` in ``enum`` (case-insensitive), or None."""
    folded = value.strip().casefold()
    for member in enum:
        if member.value.casefold() == folded:
            return member.value
    return None


class CertiverseModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=False,
        defer_build=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON-ready camelCase form, without absent optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ----------------------------------------------------------------------------- partners


class PartnerVoucherPartnerUserModel(CertiverseModel):
    email: str
    is_active: bool
    status: PartnerStatusValue


class PartnerVoucherPartnerModel(CertiverseModel):
    id: str
    is_active: bool
    is_archived: bool
    name: str
    users: list[PartnerVoucherPartnerUserModel] = Field(default_factory=list)

    @property
    def status(self) -> PartnerStatus:
        """The filter status this partner answers to (archived wins over active)."""
        if self.is_archived:
            return PartnerStatus.ARCHIVED
        return PartnerStatus.ACTIVE if self.is_active else PartnerStatus.INACTIVE


# ----------------------------------------------------------------------------- programs


class PartnerVoucherProgramDiscountModel(CertiverseModel):
    id: str
    percent: Decimal
    quantity: int


class PartnerVoucherProgramAssignedPartnerModel(CertiverseModel):
    """Not spelled out by the document; identified by id and/or name, anything else is kept."""

    id: str | None = None
    name: str | None = Field(default=None, validation_alias=AliasChoices("name", "partnerName"))


class PartnerVoucherProgramPartnerModel(CertiverseModel):
    assigned_partners: list[PartnerVoucherProgramAssignedPartnerModel] = Field(default_factory=list)
    can_assigned_partners_purchase_zero_price: bool = False
    is_available_to_all_voucher_partners: bool = False
    partner_cost_per_voucher: Decimal = Decimal("0")


class PartnerVoucherProgramEmailDomainRestrictionModel(CertiverseModel):
    """Not spelled out by the document; a restriction names an allowed e-mail domain."""

    id: str | None = None
    domain: str = Field(validation_alias=AliasChoices("domain", "emailDomain", "name"))


class PartnerVoucherProgramRestrictionsModel(CertiverseModel):
    email_domain_restrictions: list[PartnerVoucherProgramEmailDomainRestrictionModel] = Field(
        default_factory=list
    )
    enforce_assigned_email_to_book_exam: bool = False


class PartnerVoucherProgramStoreExamModel(CertiverseModel):
    code: str
    id: str
    name: str
    price: Decimal


class PartnerVoucherProgramModel(CertiverseModel):
    allow_ach_payments: bool = False
    discounts: list[PartnerVoucherProgramDiscountModel] = Field(default_factory=list)
    expiration_period_in_days: int
    id: str
    is_active: bool
    is_archived: bool
    is_inactive: bool
    name: str
    partners: PartnerVoucherProgramPartnerModel = Field(
        default_factory=PartnerVoucherProgramPartnerModel
    )
    restrictions: PartnerVoucherProgramRestrictionsModel = Field(
        default_factory=PartnerVoucherProgramRestrictionsModel
    )
    store_exams: list[PartnerVoucherProgramStoreExamModel] = Field(default_factory=list)
    voucher_code_prefix: str = ""


# ----------------------------------------------------------------------------- purchases


class PartnerVoucherPurchaseModel(CertiverseModel):
    amount_paid: Decimal
    id: str
    is_archived: bool = False
    notes: str = ""
    partner_name: str
    program_name: str
    purchase_date_utc: datetime
    purchased_by_first_name: str = ""
    purchased_by_last_name: str = ""
    quantity: int
    quantity_remaining: int = 0
    quantity_used: int = 0
    status: PurchaseStatusValue
    voucher_purchase_code: str

    @property
    def has_failed(self) -> bool:
        """True when Certiverse will never generate this purchase's vouchers."""
        return self.status in FAILED_PURCHASE_STATUSES


class VoucherPurchaseCreateCommand(CertiverseModel):
    """Body of ``POST /api/vouchers/purchases``; the client validates it before sending."""

    notes: str
    partner_name: str
    program_name: str
    quantity: int


# ----------------------------------------------------------------------------- vouchers


class PartnerVoucherUsedByModel(CertiverseModel):
    client_candidate_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    person_id: str | None = None
    used_date_utc: datetime | None = None


class PartnerVoucherModel(CertiverseModel):
    assigned_date_utc: datetime | None = None
    expiration_date_utc: datetime
    id: str
    is_active: bool
    is_used: bool
    recipient_email: str | None = None
    reservation_code: str | None = None
    reservation_status: str | None = None
    store_exam_code: str | None = None
    used_by: PartnerVoucherUsedByModel | None = None
    voucher_code: str
    voucher_purchase_code: str


# ----------------------------------------------------------------------------- pages

ItemT = TypeVar("ItemT", bound=CertiverseModel)


class Page(CertiverseModel, Generic[ItemT]):
    """One page of a list endpoint: ``data`` plus ``nextLink`` when more pages exist."""

    data: list[ItemT] = Field(default_factory=list)
    next_link: str | None = None
