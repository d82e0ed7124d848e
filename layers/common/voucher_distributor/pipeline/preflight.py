"""Pre-flight: once per (partner, program), check that the API would sell us $0 vouchers."""

from __future__ import annotations

from dataclasses import dataclass

from voucher_distributor.adapters.certiverse import (
    AmbiguousName,
    CertiverseBadRequest,
    CertiverseClient,
    NameNotFound,
)
from voucher_distributor.domain.chunking import Target
from voucher_distributor.domain.eligibility import purchase_refusal
from voucher_distributor.models.certiverse import (
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
)


@dataclass(frozen=True)
class Verdict:
    """Either the exact partner and program to buy from, or why nothing can be bought."""

    partner: PartnerVoucherPartnerModel | None = None
    program: PartnerVoucherProgramModel | None = None
    refusal: str | None = None


class Preflight:
    """Caches look-ups: each partner and each program is looked up once per batch."""

    def __init__(self, client: CertiverseClient) -> None:
        self._client = client
        self._partners: dict[str, PartnerVoucherPartnerModel | str] = {}
        self._programs: dict[str, PartnerVoucherProgramModel | str] = {}
        self._verdicts: dict[Target, Verdict] = {}
        self.lookups = 0

    def check(self, target: Target) -> Verdict:
        verdict = self._verdicts.get(target)
        if verdict is None:
            verdict = self._decide(target)
            self._verdicts[target] = verdict
        return verdict

    def _decide(self, target: Target) -> Verdict:
        partner = self._partner(target.partner_name)
        if isinstance(partner, str):
            return Verdict(refusal=partner)
        program = self._program(target.program_name)
        if isinstance(program, str):
            return Verdict(refusal=program)
        refusal = purchase_refusal(program, partner)
        return Verdict(partner=partner, program=program, refusal=refusal)

    def _partner(self, name: str) -> PartnerVoucherPartnerModel | str:
        key = name.strip().casefold()
        if key not in self._partners:
            self.lookups += 1
            try:
                self._partners[key] = self._client.find_partner(name)
            except (NameNotFound, AmbiguousName, CertiverseBadRequest) as exc:
                self._partners[key] = _reason(exc, "partner")
        return self._partners[key]

    def _program(self, name: str) -> PartnerVoucherProgramModel | str:
        key = name.strip().casefold()
        if key not in self._programs:
            self.lookups += 1
            try:
                self._programs[key] = self._client.find_program(name)
            except (NameNotFound, AmbiguousName, CertiverseBadRequest) as exc:
                self._programs[key] = _reason(exc, "program")
        return self._programs[key]


def _reason(exc: Exception, kind: str) -> str:
    if isinstance(exc, CertiverseBadRequest):
        return f"Certiverse refused the {kind} look-up: {exc.api_message}"
    return str(exc)
