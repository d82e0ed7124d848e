"""The sandbox's state: catalogue, purchases, vouchers, token, faults and request log.

Everything sits behind one lock, so HTTP handler threads and the test thread that inspects the
state never see a half-made purchase. Voucher generation is lazy: every read first advances the
purchases whose delay has passed, which keeps the sandbox free of timers and deterministic
under a fixed clock.
"""

from __future__ import annotations

import hmac
import random
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from voucher_distributor.models.certiverse import (
    CertiverseModel,
    PartnerStatus,
    PartnerVoucherModel,
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
    PartnerVoucherPurchaseModel,
    PurchaseStatus,
)
from voucher_distributor_cli.sandbox.catalog import Catalog
from voucher_distributor_cli.sandbox.config import FaultSettings, SandboxConfig

#: How the document attributes purchases made through the API ("Certiverse API").
API_USER_FIRST_NAME = "Certiverse"
API_USER_LAST_NAME = "API"

_CODE_ALPHABET = string.ascii_uppercase + string.digits
_PURCHASE_CODE_LENGTH = 8
_VOUCHER_CODE_LENGTH = 10


@dataclass(frozen=True)
class RequestRecord:
    """One API request, logged on arrival; ``status`` is None while no answer has been sent
    (a dropped connection, or a request still in flight, e.g. sleeping an injected latency)."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None


@dataclass
class LogEntry:
    """The mutable log slot of a request in flight; its status is set when the answer is known."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None = None

    def frozen(self) -> RequestRecord:
        return RequestRecord(self.method, self.path, dict(self.query), self.status)


@dataclass(frozen=True)
class SearchResult:
    """A filtered list: how many matched in all, and the wire form of the requested page."""

    total: int
    items: list[dict[str, object]]
    has_more: bool


@dataclass
class _Purchase:
    """A purchase plus what only the sandbox knows: buyer, and when/how generation ends."""

    model: PartnerVoucherPurchaseModel
    buyer_email: str
    program: PartnerVoucherProgramModel | None
    status_at: float
    codes_at: float
    fails: bool
    settled: bool = False
    generated: bool = False


def wire(model: CertiverseModel) -> dict[str, object]:
    """``model.to_wire()`` with decimals as JSON numbers, as the real (.NET) API sends them."""
    python_form = model.model_dump(mode="python", by_alias=True, exclude_none=True)
    result = _decimals_as_numbers(model.to_wire(), python_form)
    if not isinstance(result, dict):
        raise TypeError(f"{type(model).__name__} did not dump to an object")
    return result


def _decimals_as_numbers(json_form: object, python_form: object) -> object:
    if isinstance(python_form, Decimal):
        exponent = python_form.as_tuple().exponent
        integral = isinstance(exponent, int) and exponent >= 0
        return int(python_form) if integral else float(python_form)
    if isinstance(json_form, dict) and isinstance(python_form, dict):
        return {k: _decimals_as_numbers(v, python_form.get(k)) for k, v in json_form.items()}
    if isinstance(json_form, list) and isinstance(python_form, list | tuple):
        return [_decimals_as_numbers(j, p) for j, p in zip(json_form, python_form, strict=False)]
    return json_form


def _fold(value: str) -> str:
    return value.strip().casefold()


class SandboxStore:
    """Thread-safe state of one sandbox. Methods take the lock; ``_``-methods expect it held."""

    def __init__(
        self,
        catalog: Catalog,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        now_utc: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lock = threading.RLock()
        self._config = config
        self._clock = clock
        self._now_utc = now_utc
        seed = config.seed
        # Separate generators: the number of codes generated must not shift fault decisions.
        # Not cryptographic on purpose: a seed must reproduce a run exactly.
        self._id_rng = random.Random(None if seed is None else f"ids:{seed}")  # noqa: S311
        self._fault_rng = random.Random(None if seed is None else f"faults:{seed}")  # noqa: S311
        self._token = config.token
        self._faults = FaultSettings()
        self._fail_next: deque[str] = deque()
        self._outage_until = 0.0
        self._partners = list(catalog.partners)
        self._programs = list(catalog.programs)
        self._purchases: list[_Purchase] = []
        self._pending: list[_Purchase] = []
        self._vouchers: list[PartnerVoucherModel] = []
        self._vouchers_by_purchase: dict[str, list[PartnerVoucherModel]] = {}
        self._purchase_codes: set[str] = set()
        self._voucher_codes: set[str] = set()
        self._log: list[LogEntry] = []
        programs_by_name = {_fold(p.name): p for p in self._programs}
        for seeded in catalog.purchases:
            self._purchases.append(
                _Purchase(
                    model=seeded.model_copy(),
                    buyer_email=catalog.purchased_by.get(seeded.id, config.api_user_email),
                    program=programs_by_name.get(_fold(seeded.program_name)),
                    status_at=0.0,
                    codes_at=0.0,
                    fails=False,
                    settled=True,
                    generated=True,
                )
            )
            self._purchase_codes.add(seeded.voucher_purchase_code.casefold())
        for voucher in catalog.vouchers:
            self._add_voucher(voucher.model_copy())

    # ------------------------------------------------------------------ token and faults

    def token_matches(self, presented: str) -> bool:
        """Constant-time comparison; an empty accepted token means every request is refused."""
        with self._lock:
            expected = self._token
        return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())

    def set_token(self, token: str) -> None:
        with self._lock:
            self._token = token

    def faults(self) -> FaultSettings:
        """The current settings, with ``fail_next`` showing what is still queued."""
        with self._lock:
            return self._faults.model_copy(update={"fail_next": list(self._fail_next)})

    def set_faults(self, faults: FaultSettings) -> None:
        with self._lock:
            self._faults = faults
            self._fail_next = deque(faults.fail_next)
            self._outage_until = self._clock() + faults.outage_s

    def pop_fail_next(self) -> str | None:
        with self._lock:
            return self._fail_next.popleft() if self._fail_next else None

    def draw_random_fault(self) -> str | None:
        """One draw per request across drop/500/503/429, so runs with a seed reproduce."""
        with self._lock:
            faults = self._faults
            if faults.outage_s and self._clock() < self._outage_until:
                return "503"
            draw = self._fault_rng.random()
            threshold = 0.0
            for kind, rate in (
                ("drop", faults.drop_rate),
                ("500", faults.error_500_rate),
                ("503", faults.error_503_rate),
                ("429", faults.error_429_rate),
            ):
                threshold += rate
                if rate > 0 and draw < threshold:
                    return kind
            return None

    def draw_post_commit_fault(self) -> str | None:
        with self._lock:
            kind = self._faults.post_commit_fault
            if kind is None:
                return None
            if self._fault_rng.random() < self._faults.post_commit_fault_rate:
                return kind
            return None

    # ------------------------------------------------------------------ request log

    def log_arrival(self, method: str, path: str, query: dict[str, str]) -> LogEntry:
        """Log a request as it arrives, so a client that timed out still finds it logged."""
        entry = LogEntry(method, path, query)
        with self._lock:
            self._log.append(entry)
        return entry

    def log_answer(self, entry: LogEntry, status: int | None) -> None:
        with self._lock:
            entry.status = status

    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return [entry.frozen() for entry in self._log]

    def clear_request_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ catalogue

    def partners_named(self, name: str) -> list[PartnerVoucherPartnerModel]:
        """The POST's "must match" rule: the exact name, else the name in any case.

        More than one result means the name is ambiguous (names differing only in case).
        """
        with self._lock:
            return _named(self._partners, name)

    def programs_named(self, name: str) -> list[PartnerVoucherProgramModel]:
        with self._lock:
            return _named(self._programs, name)

    def search_partners(
        self, *, name: str | None, status: PartnerStatus | None, page: int, page_size: int
    ) -> SearchResult:
        with self._lock:
            matches = [
                p
                for p in self._partners
                if (name is None or _fold(name) in _fold(p.name))
                and (status is None or p.status == status)
            ]
            return _page(matches, page, page_size)

    def search_programs(self, *, name: str | None, page: int, page_size: int) -> SearchResult:
        with self._lock:
            matches = [p for p in self._programs if name is None or _fold(name) in _fold(p.name)]
            return _page(matches, page, page_size)

    # ------------------------------------------------------------------ purchases

    def create_purchase(
        self,
        *,
        partner: PartnerVoucherPartnerModel,
        program: PartnerVoucherProgramModel,
        notes: str,
        quantity: int,
    ) -> dict[str, object]:
        """Record a purchase in ``VoucherCreation`` and schedule its (lazy) generation."""
        with self._lock:
            faults = self._faults
            delay = (
                faults.generation_delay_s
                if faults.generation_delay_s is not None
                else self._config.generation_delay_s
            )
            fails = (
                faults.generation_failure_rate > 0
                and self._fault_rng.random() < faults.generation_failure_rate
            )
            started = self._clock()
            model = PartnerVoucherPurchaseModel(
                amount_paid=Decimal("0"),
                id=self._new_id(),
                is_archived=False,
                notes=notes,
                partner_name=partner.name,
                program_name=program.name,
                purchase_date_utc=self._now_utc(),
                purchased_by_first_name=API_USER_FIRST_NAME,
                purchased_by_last_name=API_USER_LAST_NAME,
                quantity=quantity,
                quantity_remaining=quantity,
                quantity_used=0,
                status=PurchaseStatus.VOUCHER_CREATION.value,
                voucher_purchase_code=self._new_purchase_code(),
            )
            purchase = _Purchase(
                model=model,
                buyer_email=self._config.api_user_email,
                program=program,
                status_at=started + delay,
                codes_at=started + delay + faults.complete_before_codes_s,
                fails=fails,
            )
            self._purchases.append(purchase)
            self._pending.append(purchase)
            # The answer always shows VoucherCreation, even with no delay: codes come later.
            return wire(model)

    def search_purchases(
        self,
        *,
        purchase_code: str | None,
        partner_name: str | None,
        program_name: str | None,
        purchased_by_email: str | None,
        status: str | None,
        page: int,
        page_size: int,
    ) -> SearchResult:
        with self._lock:
            self._advance()
            matches = [
                p.model
                for p in self._purchases
                if (
                    purchase_code is None
                    or _fold(p.model.voucher_purchase_code) == _fold(purchase_code)
                )
                and (partner_name is None or _fold(partner_name) in _fold(p.model.partner_name))
                and (program_name is None or _fold(program_name) in _fold(p.model.program_name))
                and (
                    purchased_by_email is None or _fold(p.buyer_email) == _fold(purchased_by_email)
                )
                and (status is None or _fold(p.model.status) == _fold(status))
            ]
            return _page(matches, page, page_size)

    def purchases(self) -> list[PartnerVoucherPurchaseModel]:
        with self._lock:
            self._advance()
            return [p.model.model_copy() for p in self._purchases]

    def purchases_wire(self) -> list[dict[str, object]]:
        with self._lock:
            self._advance()
            return [wire(p.model) for p in self._purchases]

    # ------------------------------------------------------------------ vouchers

    def search_vouchers(
        self,
        *,
        purchase_code: str | None,
        voucher_code: str | None,
        recipient_email: str | None,
        is_used: bool | None,
        is_active: bool | None,
        reservation_code: str | None,
        store_exam_code: str | None,
        page: int,
        page_size: int,
    ) -> SearchResult:
        with self._lock:
            self._advance()
            pool: Iterable[PartnerVoucherModel] = (
                self._vouchers
                if purchase_code is None
                else self._vouchers_by_purchase.get(_fold(purchase_code), [])
            )

            def same(wanted: str | None, actual: str | None) -> bool:
                return wanted is None or (actual is not None and _fold(actual) == _fold(wanted))

            matches = [
                v
                for v in pool
                if same(voucher_code, v.voucher_code)
                and same(recipient_email, v.recipient_email)
                and same(reservation_code, v.reservation_code)
                and same(store_exam_code, v.store_exam_code)
                and (is_used is None or v.is_used == is_used)
                and (is_active is None or v.is_active == is_active)
            ]
            return _page(matches, page, page_size)

    def update_vouchers(self, codes: Sequence[str], changes: dict[str, object]) -> list[str]:
        """Set fields (wire names: ``isUsed``, ``usedBy``, ``reservationCode``, …) on codes.

        What happens in Certiverse after the hand-out (a code used, booked, deactivated, its
        e-mail assigned in the portal), for tests and demos. Returns the codes not found.
        ``"isUsed": true`` without ``usedBy`` records the use now.
        """
        with self._lock:
            self._advance()
            by_code = {v.voucher_code.casefold(): v for v in self._vouchers}
            missing = []
            for code in codes:
                voucher = by_code.get(code.casefold())
                if voucher is None:
                    missing.append(code)
                    continue
                values = {**voucher.to_wire(), **changes}
                if values.get("isUsed") and not values.get("usedBy"):
                    values["usedBy"] = {"usedDateUtc": self._now_utc().isoformat()}
                if values.get("isUsed") is False:
                    values.pop("usedBy", None)
                updated = PartnerVoucherModel.model_validate(
                    {k: v for k, v in values.items() if v is not None}
                )
                for field in PartnerVoucherModel.model_fields:
                    setattr(voucher, field, getattr(updated, field))
            return missing

    def shift_expiry(self, days: float, codes: Sequence[str] | None = None) -> int:
        """Move expiry dates by ``days`` (negative: sooner), of ``codes`` or of every voucher."""
        with self._lock:
            self._advance()
            wanted = None if codes is None else {c.casefold() for c in codes}
            moved = 0
            for voucher in self._vouchers:
                if wanted is None or voucher.voucher_code.casefold() in wanted:
                    voucher.expiration_date_utc += timedelta(days=days)
                    moved += 1
            return moved

    def vouchers(self) -> list[PartnerVoucherModel]:
        with self._lock:
            self._advance()
            return [v.model_copy() for v in self._vouchers]

    def voucher_count(self) -> int:
        with self._lock:
            self._advance()
            return len(self._vouchers)

    def request_count(self) -> int:
        with self._lock:
            return len(self._log)

    # ------------------------------------------------------------------ internals

    def _advance(self) -> None:
        """Settle statuses and generate codes for purchases whose time has come."""
        if not self._pending:
            return
        now = self._clock()
        still_pending: list[_Purchase] = []
        for purchase in self._pending:
            if not purchase.settled and now >= purchase.status_at:
                purchase.model.status = (
                    PurchaseStatus.CHECKOUT_FAILED.value
                    if purchase.fails
                    else PurchaseStatus.COMPLETE.value
                )
                purchase.settled = True
            if purchase.settled and (purchase.fails or now >= purchase.codes_at):
                if not purchase.fails:
                    self._generate(purchase)
                purchase.generated = True
            if not purchase.generated:
                still_pending.append(purchase)
        self._pending = still_pending

    def _generate(self, purchase: _Purchase) -> None:
        model = purchase.model
        program = purchase.program
        prefix = program.voucher_code_prefix if program is not None else ""
        days = program.expiration_period_in_days if program is not None else 365
        exam_code = program.store_exams[0].code if program and program.store_exams else None
        expires = model.purchase_date_utc + timedelta(days=days)
        for _ in range(model.quantity):
            self._add_voucher(
                PartnerVoucherModel(
                    expiration_date_utc=expires,
                    id=self._new_id(),
                    is_active=True,
                    is_used=False,
                    store_exam_code=exam_code,
                    voucher_code=self._new_voucher_code(prefix),
                    voucher_purchase_code=model.voucher_purchase_code,
                )
            )

    def _add_voucher(self, voucher: PartnerVoucherModel) -> None:
        self._vouchers.append(voucher)
        self._voucher_codes.add(voucher.voucher_code.casefold())
        self._vouchers_by_purchase.setdefault(_fold(voucher.voucher_purchase_code), []).append(
            voucher
        )

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _random_code(self, length: int) -> str:
        return "".join(self._id_rng.choice(_CODE_ALPHABET) for _ in range(length))

    def _new_purchase_code(self) -> str:
        while True:
            code = "VP-" + self._random_code(_PURCHASE_CODE_LENGTH)
            if code.casefold() not in self._purchase_codes:
                self._purchase_codes.add(code.casefold())
                return code

    def _new_voucher_code(self, prefix: str) -> str:
        while True:
            code = prefix + self._random_code(_VOUCHER_CODE_LENGTH)
            if code.casefold() not in self._voucher_codes:
                return code


NamedT = TypeVar("NamedT", PartnerVoucherPartnerModel, PartnerVoucherProgramModel)


def _named(items: Sequence[NamedT], name: str) -> list[NamedT]:
    wanted = name.strip()
    exact = [item for item in items if item.name.strip() == wanted]
    return exact or [item for item in items if _fold(item.name) == _fold(wanted)]


def _page(matches: Sequence[CertiverseModel], page: int, page_size: int) -> SearchResult:
    """Slice one page (1-based) and serialise it while the caller still holds the lock."""
    start = (page - 1) * page_size
    items = [wire(m) for m in matches[start : start + page_size]]
    return SearchResult(total=len(matches), items=items, has_more=start + page_size < len(matches))
