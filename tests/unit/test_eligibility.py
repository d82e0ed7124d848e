from decimal import Decimal

from voucher_distributor.domain.eligibility import (
    email_refusal,
    enforces_assigned_email,
    portal_assignment_note,
    portal_assignment_refusal,
    program_state,
    purchase_refusal,
    recipient_conditions,
)
from voucher_distributor.models.certiverse import (
    PartnerVoucherPartnerModel,
    PartnerVoucherProgramModel,
)


def partner(name="Acme Corp", *, active=True, archived=False, id_="p-1"):
    return PartnerVoucherPartnerModel(id=id_, name=name, is_active=active, is_archived=archived)


def program(
    *,
    cost="0",
    open_to_all=True,
    assigned=(),
    zero_for_assigned=False,
    active=True,
    archived=False,
    inactive=False,
    domains=(),
    enforced=False,
):
    return PartnerVoucherProgramModel.model_validate(
        {
            "id": "prog-1",
            "name": "Spring Certification Drive",
            "expirationPeriodInDays": 365,
            "isActive": active,
            "isArchived": archived,
            "isInactive": inactive,
            "partners": {
                "assignedPartners": [{"name": n} for n in assigned],
                "canAssignedPartnersPurchaseZeroPrice": zero_for_assigned,
                "isAvailableToAllVoucherPartners": open_to_all,
                "partnerCostPerVoucher": cost,
            },
            "restrictions": {
                "emailDomainRestrictions": [{"domain": d} for d in domains],
                "enforceAssignedEmailToBookExam": enforced,
            },
        }
    )


def test_open_zero_price_program_is_purchasable():
    assert purchase_refusal(program(), partner()) is None


def test_inactive_partner_or_program_is_refused():
    assert "partner 'Acme Corp' is not active" in purchase_refusal(program(), partner(active=False))
    assert "not active" in purchase_refusal(program(), partner(archived=True))
    assert "program" in purchase_refusal(program(active=False), partner())
    assert "program" in purchase_refusal(program(archived=True), partner())
    assert "program" in purchase_refusal(program(inactive=True), partner())


def test_priced_program_is_refused_with_its_price():
    reason = purchase_refusal(program(cost="25.00"), partner())
    assert reason is not None
    assert "25.00" in reason
    assert "$0" in reason


def test_assigned_only_program():
    restricted = program(
        open_to_all=False, assigned=("ACME corp",), cost="40", zero_for_assigned=True
    )
    assert purchase_refusal(restricted, partner("Acme Corp")) is None  # assigned, zero price
    assert "not assigned" in purchase_refusal(restricted, partner("Globex", id_="p-2"))
    open_priced = program(
        open_to_all=True, assigned=("Acme Corp",), cost="40", zero_for_assigned=True
    )
    assert "costs 40" in purchase_refusal(open_priced, partner("Globex", id_="p-2"))


def test_assigned_partner_pays_list_price_without_the_zero_price_flag():
    restricted = program(open_to_all=False, assigned=("Acme Corp",), cost=Decimal("10"))
    assert "costs 10" in purchase_refusal(restricted, partner())


def test_email_domain_restrictions():
    unrestricted = program()
    assert email_refusal(unrestricted, "ada@anything.org") is None
    restricted = program(domains=("example.com", "@Partner.ORG"))
    assert email_refusal(restricted, "ada@example.com") is None
    assert email_refusal(restricted, "ada@mail.example.com") is None
    assert email_refusal(restricted, "ada@partner.org") is None
    assert "evil-example.com" in email_refusal(restricted, "ada@evil-example.com")
    assert email_refusal(restricted, "ada@example.com.evil.io") is not None


def test_program_state_reads_archived_before_inactive():
    assert program_state(program()) == "active"
    assert program_state(program(inactive=True)) == "inactive"
    assert program_state(program(active=False)) == "inactive"
    assert program_state(program(archived=True, inactive=True)) == "archived"


def test_recipient_conditions_name_the_domains_and_an_enforced_assignment():
    assert recipient_conditions(program()) == []
    domains, enforced = recipient_conditions(
        program(domains=("@Acme.example", "globex.example"), enforced=True)
    )
    assert domains == (
        "e-mail domains: only addresses at acme.example or globex.example (or a subdomain)"
    )
    assert enforced.startswith("enforced assignment: the exam can only be booked from the account")


def test_an_enforced_assignment_is_explained_both_ways() -> None:
    enforced = program(enforced=True)
    assert enforces_assigned_email(enforced)
    assert not enforces_assigned_email(program())
    refusal = portal_assignment_refusal(enforced)
    assert "enforceAssignedEmailToBookExam" in refusal
    assert "the API cannot assign" in refusal
    assert refusal.endswith("deploy with AcceptPortalAssignment=true, or choose another program")
    assert portal_assignment_note(enforced).startswith(
        "assign this code to the recipient's e-mail in the Certiverse portal"
    )
