"""``voucher-distributor programs [--partner NAME]``: Certiverse's programs, and for a partner
whether it can buy each through the API and why not.

The verdict is pre-flight's own (:func:`~voucher_distributor.domain.eligibility.purchase_refusal`),
so a program this lists as buyable is one ``local run`` and the deployed pipeline will buy, and
a "no" reads as the rows would be rejected. What a program asks of its recipients (e-mail
domains, an enforced assignment) is said beside it: it does not stop a purchase.

Certiverse is reached as ``local run`` reaches it: the built-in sandbox on loopback by default,
any compatible server with ``--certiverse-url`` (token: ``CERTIVERSE_TOKEN``), or a deployed
stack's own URL and token secret with ``--stack NAME`` (or ``--endpoint-url`` for the local one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from voucher_distributor.adapters.certiverse import (
    CertiverseClient,
    RetryPolicy,
    StaticToken,
)
from voucher_distributor.domain.eligibility import (
    allowed_domains,
    partner_is_active,
    portal_assignment_refusal,
    price_per_voucher,
    program_state,
    purchase_refusal,
    recipient_conditions,
)
from voucher_distributor.models.certiverse import (
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
)
from voucher_distributor_cli.ops.target import OpsError, Target

#: A person waits for this command: a few quick attempts, not a Lambda's 45 s of retries.
CLI_RETRY = RetryPolicy(max_attempts=3, max_delay_s=1.0, total_budget_s=8.0)
#: The built-in sandbox's throwaway token (it only listens on loopback, for this command).
_SANDBOX_TOKEN = "programs-sandbox-token"  # noqa: S105


class CertiverseNotConfigured(OpsError):
    """Certiverse cannot even be asked: no URL or no token (the command exits 1)."""


@dataclass(frozen=True)
class ProgramLine:
    """One program as the listing shows it."""

    name: str
    state: str  # active, inactive or archived
    #: What a voucher costs the partner judged (else the program's partner price).
    price: Decimal
    #: None when no partner is judged.
    can_buy: bool | None
    why_not: str | None
    #: What the program asks of recipients (e-mail domains, an enforced assignment), in words.
    conditions: tuple[str, ...]
    #: Without a partner: who may buy it ("open to all partners", "assigned partners only: …").
    who: str = ""
    email_domains: tuple[str, ...] = ()
    enforced_assignment: bool = False

    def short_conditions(self) -> list[str]:
        """The conditions as the table says them (the enforced assignment explained below it)."""
        said = []
        if self.email_domains:
            said.append(f"only addresses at {' or '.join(self.email_domains)}")
        if self.enforced_assignment:
            said.append("enforced assignment*")
        return said

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "price": str(self.price),
            "canBuy": self.can_buy,
            "whyNot": self.why_not,
            "conditions": list(self.conditions),
            "emailDomains": list(self.email_domains),
            "enforcedAssignment": self.enforced_assignment,
            **({"who": self.who} if self.who else {}),
        }


@dataclass(frozen=True)
class Catalogue:
    """What ``programs`` found: the partner judged (if any), the partners, the programs."""

    certiverse: str
    partner: PartnerVoucherPartnerModel | None
    programs: list[ProgramLine]
    #: Every partner, when no partner was named and there is more than one to choose from.
    partners: list[PartnerVoucherPartnerModel] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "certiverse": self.certiverse,
            "partner": _partner_dict(self.partner) if self.partner is not None else None,
            "partners": [_partner_dict(p) for p in self.partners],
            "programs": [line.as_dict() for line in self.programs],
        }


def read_catalogue(
    client: CertiverseClient,
    partner_name: str | None,
    where: str,
    *,
    accept_portal_assignment: bool = False,
) -> Catalogue:
    """The programs, judged for ``partner_name`` (or the only partner there is), as pre-flight
    judges them (an enforced assignment refused unless the stack has AcceptPortalAssignment).

    An unknown partner name raises ``NameNotFound`` with the names it may have meant.
    """
    partners: list[PartnerVoucherPartnerModel] = []
    if partner_name is not None:
        partner: PartnerVoucherPartnerModel | None = client.find_partner(partner_name)
    else:
        partners = list(client.iter_partners())
        partner = partners[0] if len(partners) == 1 else None
        if partner is not None:
            partners = []
    programs = [
        _line(program, partner, accept_portal_assignment=accept_portal_assignment)
        for program in client.iter_programs()
    ]
    return Catalogue(where, partner, programs, partners)


def _line(
    program: PartnerVoucherProgramModel,
    partner: PartnerVoucherPartnerModel | None,
    *,
    accept_portal_assignment: bool = False,
) -> ProgramLine:
    conditions = tuple(recipient_conditions(program))
    domains = allowed_domains(program)
    enforced = program.restrictions.enforce_assigned_email_to_book_exam
    state = program_state(program)
    if partner is not None:
        refusal = purchase_refusal(program, partner)
        if refusal is None and enforced and not accept_portal_assignment:
            refusal = portal_assignment_refusal(program)
        return ProgramLine(
            program.name,
            state,
            price_per_voucher(program, partner),
            refusal is None,
            refusal,
            conditions,
            email_domains=domains,
            enforced_assignment=enforced,
        )
    terms = program.partners
    if terms.is_available_to_all_voucher_partners:
        who = "open to all partners"
    else:
        names = [a.name or a.id or "?" for a in terms.assigned_partners]
        who = f"assigned partners only: {', '.join(names) if names else 'none'}"
    if terms.can_assigned_partners_purchase_zero_price and terms.assigned_partners:
        who += " ($0 for assigned partners)"
    return ProgramLine(
        program.name,
        state,
        terms.partner_cost_per_voucher,
        None,
        None,
        conditions,
        who=who,
        email_domains=domains,
        enforced_assignment=enforced,
    )


def _partner_dict(partner: PartnerVoucherPartnerModel) -> dict[str, str]:
    return {"name": partner.name, "status": partner.status.value}


# ---------------------------------------------------------------------- text


def format_catalogue(catalogue: Catalogue) -> str:
    lines = [f"Certiverse: {catalogue.certiverse}"]
    partner = catalogue.partner
    if catalogue.partners:
        lines.append(
            f"{len(catalogue.partners)} partners; pass --partner NAME to see what one can buy:"
        )
        width = max(len(p.name) for p in catalogue.partners)
        lines.extend(f"  {p.name:<{width}}  {p.status.value.lower()}" for p in catalogue.partners)
    elif partner is not None:
        state = "active" if partner_is_active(partner) else partner.status.value.lower()
        lines.append(f"partner: {partner.name} ({state})")
    else:
        lines.append("no partners: nobody can buy these programs through this API")
    lines.append("")
    if not catalogue.programs:
        lines.append("no programs")
        return "\n".join(lines)
    name_width = max(len("program"), *(len(line.name) for line in catalogue.programs))
    judged = partner is not None
    head = f"  {'can buy':<7}  " if judged else "  "
    lines.append(f"{head}{'price':>7}  {'state':<8}  {'program':<{name_width}}  " + (
        "why not / conditions" if judged else "who may buy / conditions"
    ))  # fmt: skip
    for line in catalogue.programs:
        said = [line.why_not] if line.why_not else []
        said += [line.who] if line.who else []
        said += line.short_conditions()
        verdict = f"  {'yes' if line.can_buy else 'no':<7}  " if judged else "  "
        lines.append(
            f"{verdict}{_money(line.price):>7}  {line.state:<8}  {line.name:<{name_width}}  "
            + "; ".join(said)
        )
    lines.append("")
    if any(line.enforced_assignment for line in catalogue.programs):
        lines.append(
            "* enforced assignment: the exam can only be booked from the account whose e-mail "
            "the voucher is\n  assigned to in Certiverse; the API does not assign codes, so "
            "assign them in Certiverse first"
        )
    if partner is not None:
        buyable = sum(1 for line in catalogue.programs if line.can_buy)
        lines.append(
            f"{buyable} of {len(catalogue.programs)} program"
            f"{'' if len(catalogue.programs) == 1 else 's'} can be bought by {partner.name!r} "
            "through the API ($0, active, open to it)"
        )
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def _money(amount: Decimal) -> str:
    if amount == amount.to_integral_value():
        return f"${amount:.0f}"
    return f"${amount:.2f}"


# ---------------------------------------------------------------------- reaching Certiverse


@contextlib.contextmanager
def certiverse_for(
    *,
    certiverse_url: str | None,
    target: Target | None,
) -> Iterator[tuple[CertiverseClient, str]]:
    """The client ``programs`` asks, and how to name it: a stack's settings when ``target``
    is given, else ``certiverse_url``, else the built-in sandbox, started for the command."""
    token = os.environ.get("CERTIVERSE_TOKEN") or None
    if target is not None:
        client = target.certiverse(certiverse_url, token, retry=CLI_RETRY)
        where = f"{client.base_url} (the stack's setting)"
        if certiverse_url:
            where = f"{client.base_url} (--certiverse-url)"
    elif certiverse_url:
        if token is None:
            raise CertiverseNotConfigured(
                "--certiverse-url needs the API token in CERTIVERSE_TOKEN"
            )
        client = CertiverseClient(certiverse_url, StaticToken(token), retry=CLI_RETRY)
        where = client.base_url
    else:
        # Imported here: only this default needs the sandbox's server.
        from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer  # noqa: PLC0415

        config = SandboxConfig(token=_SANDBOX_TOKEN)
        with (
            SandboxServer(config, host="127.0.0.1", port=0) as sandbox,
            CertiverseClient(
                sandbox.base_url, StaticToken(_SANDBOX_TOKEN), retry=CLI_RETRY
            ) as client,
        ):
            yield client, f"the built-in sandbox ({client.base_url})"
        return
    with client:
        yield client, where
