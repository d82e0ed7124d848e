"""What the API answers: a JSON document, or RFC 9457 problem details listing every problem.

An unexpected error is a 500 problem with no detail (the log has it), never a stack trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Answer:
    """A response other than a plain 200 JSON document: the handler sends it as it is."""

    status: int
    body: str
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Problem(Exception):
    """An answer other than success: RFC 9457 problem details."""

    def __init__(
        self, status: int, title: str, detail: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.problems = status, title, detail, problems

    def answer(self) -> Answer:
        return problem_answer(self.status, self.title, self.detail, self.problems)


def problem_answer(status: int, title: str, detail: str, problems: Any = None) -> Answer:
    document: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                                "detail": detail}  # fmt: skip
    if problems:
        document["problems"] = problems
    return Answer(status, json.dumps(document), PROBLEM_JSON)


def clients_unreadable() -> Answer:
    """503: the API clients secret cannot be read (the log says why)."""
    return problem_answer(
        503, "Service Unavailable", "the API cannot check credentials right now; retry later"
    )


def no_route(method: str, path: str) -> Answer:
    return problem_answer(404, "Not Found", f"no route {method} {path}; see the README's API")


def unexpected() -> Answer:
    """500, saying nothing of the error (the log has it)."""
    return problem_answer(
        500, "Internal Server Error", "the request could not be handled; it was logged"
    )
