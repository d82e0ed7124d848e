"""The partner rule (client, partners, the distribution's partners → allowed / 403 / 404), and
separation of duties, case by case."""

from __future__ import annotations

import pytest

from voucher_distributor.domain.tenancy import (
    CHANNEL_API,
    CHANNEL_QUEUE,
    CHANNEL_UPLOAD,
    Action,
    Reach,
    judge,
    submitter_refusal,
)
from voucher_distributor.models.api import ApiClient, Scope

SECRET = "whsec_" + "A" * 43 + "="


def client(**fields: object) -> ApiClient:
    return ApiClient.model_validate({"scopes": [Scope.READ], "secrets": [SECRET], **fields})


ACME = Reach.of("acme-hr", client(partners=["Acme Corp", "Acme EMEA"]))
ACME_SPRING = Reach.of("acme-lms", client(partners=["Acme Corp"], programs=["Spring Cert"]))
OPERATOR = Reach.of("ops", client(allPartners=True))
LEGACY = Reach.of("old-hr", client())  # an entry from before partners: every partner


def test_a_client_entry_says_whether_it_is_bound() -> None:
    assert client().unbound is True
    assert client(allPartners=True).unbound is False
    assert client(partners=["Acme Corp"]).unbound is False
    assert client(partners=[" Acme Corp ", "Acme Corp", ""]).partners == ("Acme Corp",)
    with pytest.raises(ValueError, match="at least one"):
        client(partners=["  "])


@pytest.mark.parametrize(
    ("reach", "action", "partners", "programs", "status", "says"),
    [
        # submitting: inside is allowed, names compared trimmed and case-folded
        (ACME, Action.SUBMIT, ["Acme Corp"], ["Spring Cert"], 200, ""),
        (ACME, Action.SUBMIT, [" acme emea "], ["Anything"], 200, ""),
        (ACME, Action.SUBMIT, ["Acme Corp", "Acme EMEA"], ["Spring Cert"], 200, ""),
        # outside its partners: 403, naming the partner it may not use
        (ACME, Action.SUBMIT, ["Globex"], ["Spring Cert"], 403, "partner 'Globex'"),
        # a CSV spanning partners, one of them outside: 403
        (ACME, Action.SUBMIT, ["Acme Corp", "Globex"], ["Spring Cert"], 403, "'Globex'"),
        # no partner named, no stack default: a bound client must name one
        (ACME, Action.SUBMIT, [], ["Spring Cert"], 403, "name the partner"),
        # confined to programs: another program is 403, naming it
        (ACME_SPRING, Action.SUBMIT, ["Acme Corp"], ["Spring Cert"], 200, ""),
        (ACME_SPRING, Action.SUBMIT, ["Acme Corp"], ["Cloud Cert"], 403, "program 'Cloud Cert'"),
        (ACME_SPRING, Action.SUBMIT, ["Acme Corp"], [], 403, "name the partner and program"),
        # every partner: an operator's tool, and entries from before partners
        (OPERATOR, Action.SUBMIT, ["Globex"], ["Cloud Cert"], 200, ""),
        (OPERATOR, Action.SUBMIT, [], [], 200, ""),
        (LEGACY, Action.SUBMIT, ["Globex"], [], 200, ""),
        # reading: inside is allowed
        (ACME, Action.READ, ["Acme Corp"], ["Spring Cert"], 200, ""),
        (ACME, Action.READ, ["ACME EMEA", "acme corp"], ["Spring Cert"], 200, ""),
        # outside: 404, exactly as for an id that never existed
        (ACME, Action.READ, ["Globex"], ["Spring Cert"], 404, "outside"),
        # spanning partners: readable only by a client allowed every one of them
        (ACME, Action.READ, ["Acme Corp", "Globex"], ["Spring Cert"], 404, "outside"),
        # a batch naming no partner (an S3 drop not yet planned, every row unresolved): 404
        (ACME, Action.READ, [], [], 404, "names no partner"),
        (ACME_SPRING, Action.READ, ["Acme Corp"], ["Cloud Cert"], 404, "outside"),
        (ACME_SPRING, Action.READ, ["Acme Corp"], ["Spring Cert", "Cloud Cert"], 404, "outside"),
        (ACME_SPRING, Action.READ, ["Acme Corp"], [], 404, "names no"),
        (OPERATOR, Action.READ, ["Globex", "Acme Corp"], [], 200, ""),
        (OPERATOR, Action.READ, [], [], 200, ""),
        (LEGACY, Action.READ, ["Globex"], ["Cloud Cert"], 200, ""),
        # approving or rejecting: the same reach as reading (404 outside)
        (ACME, Action.DECIDE, ["Acme Corp"], ["Spring Cert"], 200, ""),
        (ACME, Action.DECIDE, ["Globex"], ["Spring Cert"], 404, "outside"),
        (OPERATOR, Action.DECIDE, ["Globex"], ["Spring Cert"], 200, ""),
    ],
)
def test_the_partner_rule(
    reach: Reach,
    action: Action,
    partners: list[str],
    programs: list[str],
    status: int,
    says: str,
) -> None:
    verdict = judge(reach, action, partners=partners, programs=programs)
    assert verdict.status == status
    assert verdict.allowed is (status == 200)
    assert says in verdict.reason
    assert "@" not in verdict.reason


def test_holdings_within_reach() -> None:
    assert ACME.holds("acme corp", "Any Program")
    assert not ACME.holds("Globex", "Any Program")
    assert ACME_SPRING.holds("Acme Corp", "spring cert")
    assert not ACME_SPRING.holds("Acme Corp", "Cloud Cert")
    assert OPERATOR.holds("Globex", "Cloud Cert")
    assert LEGACY.holds("Globex", "Cloud Cert")


@pytest.mark.parametrize(
    ("submitted_by", "channel", "deciders", "decider_channel", "allowed", "refused"),
    [
        # the API client that posted a batch may not approve it
        ("acme-hr", CHANNEL_API, ["acme-hr"], CHANNEL_API, False, True),
        # another client may
        ("acme-hr", CHANNEL_API, ["acme-approver"], CHANNEL_API, False, False),
        # ApprovalBySubmitter=true: a one-person team approves its own
        ("acme-hr", CHANNEL_API, ["acme-hr"], CHANNEL_API, True, False),
        # an operator (CLI) deciding an API client's batch
        ("acme-hr", CHANNEL_API, ["arn:aws:iam::1:user/acme-hr", "AIDA1"], "cli", False, False),
        # the uploader (S3 names it AWS:<id>) deciding from the CLI (STS names it <id>)
        (
            "AWS:AIDAUPLOADER",
            CHANNEL_UPLOAD,
            ["arn:aws:iam::1:user/u", "AIDAUPLOADER"],
            "cli",
            False,
            True,
        ),
        (
            "AROAROLE:alice",
            CHANNEL_QUEUE,
            ["arn:aws:sts::1:assumed-role/r/alice", "AROAROLE:alice"],
            "cli",
            False,
            True,
        ),
        (
            "AROAROLE:alice",
            CHANNEL_QUEUE,
            ["arn:aws:sts::1:assumed-role/r/bob", "AROAROLE:bob"],
            "cli",
            False,
            False,
        ),
        ("AWS:AIDAUPLOADER", CHANNEL_UPLOAD, ["x", "AIDAUPLOADER"], "cli", True, False),
        # an upload whose uploader is unknown: nobody to compare with
        ("", CHANNEL_UPLOAD, ["x", "AIDA1"], "cli", False, False),
        # an API client named like a principal is not that principal
        ("AIDA1", CHANNEL_UPLOAD, ["AIDA1"], CHANNEL_API, False, False),
    ],
)
def test_who_submitted_may_not_decide(
    submitted_by: str,
    channel: str,
    deciders: list[str],
    decider_channel: str,
    allowed: bool,
    refused: bool,
) -> None:
    refusal = submitter_refusal(
        submitted_by, deciders, channel=channel, decider_channel=decider_channel, allowed=allowed
    )
    assert (refusal is not None) is refused
    if refusal:
        assert "ApprovalBySubmitter" in refusal
