"""Who may buy what, and who may receive it: the purchase rules of a voucher program.

The API document describes the fields but not every rule; these are our readings, used both by
the pre-flight check and by the sandbox so that the two never disagree:

* a program is purchasable when it is active and neither archived nor inactive;
* a partner may buy when the program is open to all partners or lists it among its assigned
  partners (by id or by name, case-insensitive);
* the price a partner pays per voucher is 0 when it is an assigned partner and the program lets
  assigned partners buy at zero price, else ``partnerCostPerVoucher``; only $0 purchases are
  allowed through the API;
* when a program lists e-mail domain restrictions, a recipient's domain must equal one of them
  or be a subdomain of one.
"""

from __future__ import annotations

from decimal import Decimal

from voucher_distributor.domain.emails import email_domain
from voucher_distributor.models.certiverse import (
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
)


def program_is_purchasable(program: PartnerVoucherProgramModel) -> bool:
    return program.is_active and not program.is_archived and not program.is_inactive


def partner_is_active(partner: PartnerVoucherPartnerModel) -> bool:
    return partner.is_active and not partner.is_archived


def is_assigned_partner(
    program: PartnerVoucherProgramModel, partner: PartnerVoucherPartnerModel
) -> bool:
    name = partner.name.casefold()
    return any(
        (assigned.id is not None and assigned.id == partner.id)
        or (assigned.name is not None and assigned.name.casefold() == name)
        for assigned in program.partners.assigned_partners
    )


def partner_may_buy(
    program: PartnerVoucherProgramModel, partner: PartnerVoucherPartnerModel
) -> bool:
    return program.partners.is_available_to_all_voucher_partners or is_assigned_partner(
        program, partner
    )


def price_per_voucher(
    program: PartnerVoucherProgramModel, partner: PartnerVoucherPartnerModel
) -> Decimal:
    terms = program.partners
    if terms.can_assigned_partners_purchase_zero_price and is_assigned_partner(program, partner):
        return Decimal("0")
    return terms.partner_cost_per_voucher


def purchase_refusal(
    program: PartnerVoucherProgramModel, partner: PartnerVoucherPartnerModel
) -> str | None:
    """Why ``partner`` may not buy $0 vouchers of ``program`` through the API, or None."""
    if not partner_is_active(partner):
        return f"partner {partner.name!r} is not active"
    if not program_is_purchasable(program):
        return f"program {program.name!r} is not active"
    if not partner_may_buy(program, partner):
        return f"partner {partner.name!r} is not assigned to program {program.name!r}"
    price = price_per_voucher(program, partner)
    if price != 0:
        return (
            f"program {program.name!r} costs {price} per voucher for partner {partner.name!r}; "
            "only $0 programs can be bought through the API"
        )
    return None


def program_state(program: PartnerVoucherProgramModel) -> str:
    """``active``, ``inactive`` or ``archived``: the program's state as a person reads it."""
    if program.is_archived:
        return "archived"
    return "active" if program_is_purchasable(program) else "inactive"


def recipient_conditions(program: PartnerVoucherProgramModel) -> list[str]:
    """What a program asks of the people its vouchers go to (none: anyone), in words.

    Neither stops a purchase: domain restrictions reject the rows outside them, and an enforced
    assignment binds each voucher to the e-mail it is assigned to in Certiverse, which the API
    does not set (the booking account must match it).
    """
    conditions = []
    domains = allowed_domains(program)
    if domains:
        conditions.append(
            f"e-mail domains: only addresses at {' or '.join(domains)} (or a subdomain)"
        )
    if program.restrictions.enforce_assigned_email_to_book_exam:
        conditions.append(
            "enforced assignment: the exam can only be booked from the account whose e-mail "
            "the voucher is assigned to in Certiverse (the API does not assign codes)"
        )
    return conditions


def allowed_domains(program: PartnerVoucherProgramModel) -> tuple[str, ...]:
    return tuple(
        r.domain.strip().lstrip("@").lower() for r in program.restrictions.email_domain_restrictions
    )


def email_refusal(program: PartnerVoucherProgramModel, email: str) -> str | None:
    """Why ``email`` may not receive a voucher of ``program`` (domain restrictions), or None."""
    domains = allowed_domains(program)
    if not domains:
        return None
    domain = email_domain(email)
    if any(domain == d or domain.endswith("." + d) for d in domains):
        return None
    return f"e-mail domain {domain!r} is not allowed by program {program.name!r}"


def enforces_assigned_email(program: PartnerVoucherProgramModel) -> bool:
    """Only the e-mail assigned to a voucher in Certiverse may book (the API cannot assign)."""
    return program.restrictions.enforce_assigned_email_to_book_exam


def portal_assignment_refusal(program: PartnerVoucherProgramModel) -> str:
    """Why pre-flight refuses an enforced-assignment program unless the stack accepts it."""
    return (
        f"program {program.name!r} lets only the account whose e-mail is assigned to the voucher "
        "in Certiverse book the exam (enforceAssignedEmailToBookExam), and the API cannot assign "
        "codes: a code we hand out could not be booked. Assign the codes in the Certiverse portal "
        "and deploy with AcceptPortalAssignment=true, or choose another program"
    )


def portal_assignment_note(program: PartnerVoucherProgramModel) -> str:
    """Said on each row of an accepted enforced-assignment program: what is left to do."""
    return (
        f"assign this code to the recipient's e-mail in the Certiverse portal: program "
        f"{program.name!r} lets only the assigned e-mail book the exam"
    )
