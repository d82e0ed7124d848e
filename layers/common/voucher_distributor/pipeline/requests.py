"""Answering an HR request that cannot even be read (bad JSON, missing requestId, bad types)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from voucher_distributor.domain.batches import RESULTS_PREFIX
from voucher_distributor.pipeline.context import Services, log

#: Where the refusal of the request queue's message ``message_id`` is written.
INVALID_REQUESTS_PREFIX = f"{RESULTS_PREFIX}requests/invalid/"


def refusal_key(message_id: str) -> str:
    return f"{INVALID_REQUESTS_PREFIX}{message_id}.error.json"


def request_problems(error: ValidationError) -> list[dict[str, str]]:
    """Each problem of an unreadable request as ``{"field", "problem"}``, in a person's words."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": _words(e)}
        for e in error.errors(include_url=False, include_input=False)
    ]


def _words(error: Any) -> str:
    if error["type"] == "missing":
        return "required, but missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def refuse_request(services: Services, message_id: str, body: str, error: ValidationError) -> str:
    """Write why under results/requests/invalid/ (no request id to name it by) and count it."""
    problems = request_problems(error)
    key = refusal_key(message_id)
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
    # The fields only: problems may quote the request's values (addresses) and logs keep no PII.
    fields = ", ".join(p["field"] for p in problems)
    log.error(
        "request message %s refused: %d problem(s) (%s); see %s", message_id, len(problems),
        fields, key,
    )  # fmt: skip
    return key
