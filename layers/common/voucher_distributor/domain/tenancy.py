"""Whose distributions an API client reaches: the partner rule, pure.

One stack serves many partners. Each API client is bound to its partners (and optionally some
of their programs): it submits, reads, approves and looks up people only there. What lies
outside does not exist for it — reading is 404, exactly as for an id that never existed, so ids
cannot be probed — and submitting outside is 403, naming the partner it may not use. A
distribution that spans partners is readable only by a client allowed every one of them.

Names compare as Certiverse's exact-match pick does: trimmed and case-folded.

A route applies the rule with one call: :func:`judge` (the API's use cases wrap it as
``pipeline.distributions.reachable``). Separation of duties (who submitted may not approve)
is :func:`submitter_refusal`, shared with the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from voucher_distributor.models.api import ApiClient

#: The ``channel`` of a batch: which door it came in by.
CHANNEL_API = "api"
CHANNEL_QUEUE = "queue"
CHANNEL_UPLOAD = "upload"


class Action(StrEnum):
    """What a client asks to do with a distribution."""

    SUBMIT = "submit"  # outside its partners: 403, naming the partner
    READ = "read"  # status, results, assignments, approval, holdings: outside is 404
    DECIDE = "decide"  # approve/reject: 404 outside, like READ


def fold(name: str) -> str:
    return name.strip().casefold()


@dataclass(frozen=True)
class Reach:
    """The partners and programs one client reaches (``None``: every one)."""

    client_id: str
    partners: frozenset[str] | None
    programs: frozenset[str] | None = None
    #: The names as the operator spelled them, for messages.
    partner_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, client_id: str, client: ApiClient) -> Reach:
        every = client.all_partners or client.partners is None
        return cls(
            client_id=client_id,
            partners=None if every else frozenset(fold(p) for p in client.partners or ()),
            programs=frozenset(fold(p) for p in client.programs) if client.programs else None,
            partner_names=tuple(client.partners or ()),
        )

    @property
    def everywhere(self) -> bool:
        return self.partners is None and self.programs is None

    def has_partner(self, name: str) -> bool:
        return self.partners is None or fold(name) in self.partners

    def has_program(self, name: str) -> bool:
        return self.programs is None or fold(name) in self.programs

    def holds(self, partner: str, program: str) -> bool:
        """Whether a (partner, program) — a holding, a row — is within reach."""
        return self.has_partner(partner) and self.has_program(program)


@dataclass(frozen=True)
class Verdict:
    """``status`` 200 (allowed), 403 or 404; ``reason`` says why (for the log and a 403)."""

    status: int
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Verdict(200)


def judge(
    reach: Reach,
    action: Action,
    *,
    partners: Iterable[str],
    programs: Iterable[str] = (),
) -> Verdict:
    """May ``reach``'s client do ``action`` with a distribution of these partners and programs?

    ``partners``/``programs``: every one the distribution names (a submission: what its rows
    and fields name, defaults applied; a batch: what it was planned for). A distribution naming
    no partner (or, for a client confined to programs, no program) is reachable only by a
    client with every one.
    """
    if reach.everywhere:
        return ALLOWED
    named = sorted({p.strip() for p in partners if p.strip()}, key=fold)
    programs_named = sorted({p.strip() for p in programs if p.strip()}, key=fold)
    outside = [p for p in named if not reach.has_partner(p)]
    outside_programs = [p for p in programs_named if not reach.has_program(p)]
    unnamed = (reach.partners is not None and not named) or (
        reach.programs is not None and not programs_named
    )
    if action == Action.SUBMIT:
        return _submit_verdict(reach, outside, outside_programs, unnamed=unnamed)
    if outside or outside_programs:
        return Verdict(404, "outside the client's partners or programs")
    if unnamed:
        return Verdict(404, "the distribution names no partner or program the client has")
    return ALLOWED


def _submit_verdict(
    reach: Reach, outside: list[str], outside_programs: list[str], *, unnamed: bool
) -> Verdict:
    widen = "an operator widens it with `voucher-distributor api-client update`"
    if outside:
        return Verdict(
            403,
            f"API client {reach.client_id!r} may not submit for partner {outside[0]!r}; it may "
            f"use {_names(reach.partner_names) or 'every partner'} ({widen})",
        )
    if outside_programs:
        return Verdict(
            403,
            f"API client {reach.client_id!r} may not submit for program "
            f"{outside_programs[0]!r} ({widen} --programs)",
        )
    if unnamed:
        return Verdict(
            403,
            "name the partner and program (partnerName/programName, or the partner and program "
            f"query parameters): API client {reach.client_id!r} is confined to "
            f"{_names(reach.partner_names) or 'some programs'}",
        )
    return ALLOWED


def submitter_refusal(
    submitted_by: str,
    deciders: Iterable[str],
    *,
    channel: str,
    decider_channel: str,
    allowed: bool,
) -> str | None:
    """Why this decider may not decide a batch it submitted itself (``None``: it may).

    ``submitted_by``: the batch's submitter (an API client id for ``api``, else an AWS
    principal); ``deciders``: the names the decider goes by (an API client id; or an AWS
    identity's ARN and user id). ``allowed``: the stack's ``ApprovalBySubmitter``.
    """
    if allowed or not submitted_by:
        return None
    if (channel == CHANNEL_API) != (decider_channel == CHANNEL_API):
        return None
    mine = {_principal(d) for d in deciders if d}
    if _principal(submitted_by) not in mine:
        return None
    who = f"API client {submitted_by!r}" if channel == CHANNEL_API else f"{submitted_by}"
    return (
        f"{who} submitted this batch and may not approve or reject it too: another client with "
        "the approve scope, or an operator, decides (ApprovalBySubmitter=true allows it)"
    )


def _principal(value: str) -> str:
    """An S3 event names a principal ``AWS:AIDA…``; SQS and STS name it ``AIDA…``."""
    return value.strip().removeprefix("AWS:")


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)
