"""Who may reach what over the HTTP API, in one call per route; and used signatures.

A route that touches a distribution calls :func:`reachable` once, with the caller's
:class:`~voucher_distributor.domain.tenancy.Reach` and what it means to do: it returns the
distribution (the batch, and the API's own record of accepting it) or raises
:class:`NotFound`, exactly as for an id that never existed. A submission calls
:func:`check_submission` (403 :class:`Denied`, naming the partner). Every refusal of this kind
counts in ``ApiRequestsDenied`` and is logged with the client id, never an e-mail address.

:func:`remember_signature` keeps a ``webhook-id`` good for one request (``Replayed`` otherwise).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from voucher_distributor.domain.standard_webhooks import TOLERANCE_S
from voucher_distributor.domain.tenancy import Action, Reach, Verdict, judge
from voucher_distributor.models.ledger import ApiRequestRecord, BatchRecord, SignatureUse
from voucher_distributor.pipeline.context import Services, log

DENIED_METRIC = "ApiRequestsDenied"


class NotFound(LookupError):
    """404: no such batch (or not this client's to see: the same answer)."""


class Denied(Exception):
    """403: the client may not do this for that partner (or, approving, it submitted it)."""


class Replayed(Exception):
    """401: the ``webhook-id`` was already used for another request."""


@dataclass(frozen=True)
class Distribution:
    """A batch as the API knows it: the ledger's batch (once ingest has read it) and the
    API's record of accepting it (when it came in through the API)."""

    batch_id: str
    batch: BatchRecord | None
    accepted: ApiRequestRecord | None

    @property
    def partners(self) -> set[str]:
        found = set(self.batch.partners if self.batch else ())
        return found | set(self.accepted.partners if self.accepted else ())

    @property
    def programs(self) -> set[str]:
        found = set(self.batch.programs if self.batch else ())
        return found | set(self.accepted.programs if self.accepted else ())


def reachable(services: Services, reach: Reach, batch_id: str, action: Action) -> Distribution:
    """The distribution, if it exists and ``reach`` may ``action`` it; else :class:`NotFound`."""
    ledger = services.ledger
    batch = ledger.batches.get_batch(batch_id) if batch_id else None
    accepted = ledger.requests.get_api_request(batch_id) if batch_id else None
    if batch is None and accepted is None:
        raise NotFound(f"no distribution {batch_id!r}")
    found = Distribution(batch_id, batch, accepted)
    verdict = judge(reach, action, partners=found.partners, programs=found.programs)
    if not verdict.allowed:
        denied(services, reach, verdict, batch_id=batch_id, action=action)
        raise NotFound(f"no distribution {batch_id!r}")
    return found


def check_submission(
    services: Services, reach: Reach, partners: Iterable[str], programs: Iterable[str]
) -> None:
    """:class:`Denied` unless ``reach`` may submit for every partner and program named."""
    verdict = judge(reach, Action.SUBMIT, partners=partners, programs=programs)
    if not verdict.allowed:
        denied(services, reach, verdict, action=Action.SUBMIT)
        raise Denied(verdict.reason)


def denied(
    services: Services,
    reach: Reach,
    verdict: Verdict,
    *,
    action: Action,
    batch_id: str | None = None,
) -> None:
    """Count and log one refusal by the partner rule (client id and batch, no address)."""
    services.metrics.count(DENIED_METRIC)
    log.warning(
        "API client %s denied (%d) to %s %s: %s",
        reach.client_id, verdict.status, action.value, batch_id or "a distribution",
        verdict.reason,
    )  # fmt: skip


# ------------------------------------------------------------------ signatures


def canonical_query(raw: str) -> str:
    """The query string in one spelling: its pairs sorted, each encoded the same way."""
    return urlencode(sorted(parse_qsl(raw, keep_blank_values=True)))


def remember_signature(
    services: Services,
    *,
    webhook_id: str,
    client_id: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    signed_at: int,
) -> None:
    """Keep the ``webhook-id`` for the window, bound to this request; :class:`Replayed` when
    it was used before for anything else. The same request again (a sender's retry) passes."""
    now = services.now()
    use = SignatureUse(
        webhook_id=webhook_id,
        client_id=client_id,
        method=method.upper(),
        path=path,
        query=canonical_query(query),
        body_sha256=hashlib.sha256(body).hexdigest(),
        used_at=now,
        # Past signed_at + the window the timestamp check refuses it anyway; a margin for clocks.
        expires_at=max(now, signed_at) + 2 * TOLERANCE_S + 60,
    )
    earlier = services.ledger.signatures.remember_signature(use)
    if earlier is not None and earlier.binding() != use.binding():
        services.metrics.count("ApiRequestsReplayed")
        log.warning(
            "API client %s: webhook-id replayed on %s %s (first used on %s %s)",
            client_id, use.method, use.path, earlier.method, earlier.path,
        )  # fmt: skip
        raise Replayed(
            "replayed: this webhook-id was already used for another request (route, query or "
            "body); sign every request with a new webhook-id"
        )
