"""Answering an HR request that cannot even be read (bad JSON, missing requestId, bad types)."""

from __future__ import annotations

from pydantic import ValidationError

from voucher_distributor.domain.batches import RESULTS_PREFIX
from voucher_distributor.pipeline.context import Services, log


def refuse_request(services: Services, message_id: str, body: str, error: ValidationError) -> str:
    """Write why under results/requests/invalid/ (no request id to name it by) and count it."""
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
        for e in error.errors(include_url=False, include_input=False)
    ]
    key = f"{RESULTS_PREFIX}requests/invalid/{message_id}.error.json"
    services.storage.put_json(
        key,
        {
            "messageId": message_id,
            "status": "refused",
            "error": "the request is not a valid distribution request; nothing was bought",
            "problems": problems,
            "bodyBytes": len(body.encode()),
        },
    )
    services.metrics.count("RequestsRefused")
    log.error("request message %s refused: %d problem(s)", message_id, len(problems))
    return key
