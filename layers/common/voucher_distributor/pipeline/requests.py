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
    """Each problem of an unreadable request as ``{"field", "problem"}``, in a person's words.

    A field inside a list is named as JSON paths write it, counting from 0
    (``recipients[1].email``), and the problem says which one that is ("the 2nd recipient").
    """
    problems = []
    for e in error.errors(include_url=False, include_input=False):
        loc = tuple(e["loc"])
        problem = _words(e)
        if (which := _which(loc)) is not None:
            problem = f"{problem} ({which})"
        problems.append({"field": field_path(loc) or "(body)", "problem": problem})
    return problems


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("recipients", 1, "email")`` -> ``recipients[1].email``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _which(loc: tuple[int | str, ...]) -> str | None:
    """What the first list index of a path means, in words: "recipients[1] is the 2nd
    recipient, counting from 0"."""
    for at, part in enumerate(loc):
        if isinstance(part, int) and at > 0:
            name = str(loc[at - 1])
            item = name[:-1] if name.endswith("s") else f"item of {name}"
            return (
                f"{field_path(loc[: at + 1])} is the {_ordinal(part + 1)} {item}, counting from 0"
            )
    return None


def _ordinal(number: int) -> str:
    if 10 <= number % 100 <= 20:
        return f"{number}th"
    return f"{number}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th') }"


def _words(error: Any) -> str:
    if error["type"] == "missing":
        return "required, but missing"
    if error["type"] == "bool_type":
        return "must be true or false (a JSON boolean, without quotes)"
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
