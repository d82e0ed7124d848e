"""Pre-flight: once per (partner, program), check that the API would sell us $0 vouchers.

Two kinds of "no": a **refusal** is about the input (unknown, priced or inactive program, partner
not allowed) and rejects its rows; a **failure** is the system's (Certiverse unreachable or 5xx
after the retries, a 401, a base URL that is not the API) and fails its rows, so they can be
retried once the cause is fixed. After a failure no further look-up is tried: every later target
fails with the same reason instead of waiting out the retries again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from voucher_distributor.adapters.certiverse import (
    AmbiguousName,
    CertiverseBadRequest,
    CertiverseClient,
    CertiverseMisconfigured,
    CertiverseServerError,
    CertiverseUnauthorized,
    NameNotFound,
    TokenUnavailable,
)
from voucher_distributor.domain.chunking import Target
from voucher_distributor.domain.eligibility import (
    enforces_assigned_email,
    portal_assignment_note,
    portal_assignment_refusal,
    purchase_refusal,
)
from voucher_distributor.models.certiverse import (
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
)

#: A Certiverse partner or program, as a look-up finds it.
_NamedT = TypeVar("_NamedT", PartnerVoucherPartnerModel, PartnerVoucherProgramModel)


@dataclass(frozen=True)
class Verdict:
    """Either the exact partner and program to buy from, or why nothing can be bought."""

    partner: PartnerVoucherPartnerModel | None = None
    program: PartnerVoucherProgramModel | None = None
    refusal: str | None = None  # the input's fault: rows `rejected`
    failure: str | None = None  # the system's fault: rows `failed`, retry once fixed
    #: Said on each assigned row (an accepted enforced-assignment program: assign in the portal).
    note: str = ""


class Preflight:
    """Caches look-ups: each partner and each program is looked up once per batch."""

    def __init__(self, client: CertiverseClient, *, accept_portal_assignment: bool = False) -> None:
        self._client = client
        #: AcceptPortalAssignment: buy for enforced-assignment programs (assigned in the portal).
        self._accept_portal_assignment = accept_portal_assignment
        self._partners: dict[str, PartnerVoucherPartnerModel | str] = {}
        self._programs: dict[str, PartnerVoucherProgramModel | str] = {}
        self._verdicts: dict[Target, Verdict] = {}
        self.lookups = 0
        #: Why Certiverse could not be used, once it could not: the batch's error.
        self.failure: str | None = None
        #: The failure was a 401 (or no token): the CertiverseUnauthorized alarm's business.
        self.unauthorized = False
        #: The failure was an outage (5xx or unreachable after the client's retries): it may
        #: pass, so the input is worth reading again later.
        self.transient = False
        #: The outage's last ``Retry-After`` (seconds), when Certiverse gave one.
        self.retry_after_s: float | None = None

    def check(self, target: Target) -> Verdict:
        verdict = self._verdicts.get(target)
        if verdict is None:
            if self.failure is not None:
                return Verdict(failure=self.failure)
            try:
                verdict = self._decide(target)
            except CertiverseMisconfigured as exc:
                return self._failed(str(exc))
            except (CertiverseUnauthorized, TokenUnavailable) as exc:
                self.unauthorized = True
                return self._failed(
                    f"{str(exc).rstrip('.')}. Nothing was bought: run retry-failed for this "
                    "batch once the token is fixed"
                )
            except CertiverseServerError as exc:
                self.transient = True
                self.retry_after_s = exc.retry_after_s
                return self._failed(
                    f"Certiverse could not be reached during pre-flight ({exc}); nothing was "
                    "bought for this row — run retry-failed once Certiverse answers again"
                )
            self._verdicts[target] = verdict
        return verdict

    def _failed(self, reason: str) -> Verdict:
        self.failure = reason
        return Verdict(failure=reason)

    def _decide(self, target: Target) -> Verdict:
        partner = self._partner(target.partner_name)
        if isinstance(partner, str):
            return Verdict(refusal=partner)
        program = self._program(target.program_name)
        if isinstance(program, str):
            return Verdict(refusal=program)
        refusal = purchase_refusal(program, partner)
        note = ""
        if refusal is None and enforces_assigned_email(program):
            if self._accept_portal_assignment:
                note = portal_assignment_note(program)
            else:
                refusal = portal_assignment_refusal(program)
        return Verdict(partner=partner, program=program, refusal=refusal, note=note)

    def _partner(self, name: str) -> PartnerVoucherPartnerModel | str:
        return self._look_up(self._partners, name, self._client.find_partner, "partner")

    def _program(self, name: str) -> PartnerVoucherProgramModel | str:
        return self._look_up(self._programs, name, self._client.find_program, "program")

    def _look_up(
        self, found: dict[str, _NamedT | str], name: str, find: Callable[[str], _NamedT], kind: str
    ) -> _NamedT | str:
        """The ``kind`` named ``name`` (looked up once per name, ignoring case), or why not."""
        key = name.strip().casefold()
        if key not in found:
            self.lookups += 1
            try:
                found[key] = find(name)
            except CertiverseMisconfigured:
                raise
            except (NameNotFound, AmbiguousName, CertiverseBadRequest) as exc:
                found[key] = _reason(exc, kind)
        return found[key]


def _reason(exc: Exception, kind: str) -> str:
    if isinstance(exc, CertiverseBadRequest):
        return f"Certiverse refused the {kind} look-up: {exc.api_message}"
    return str(exc)
