"""Settings of the Certiverse sandbox: what it serves (config) and how it misbehaves (faults).

Both are pydantic models so that the same validation applies whether they are built in Python,
from CLI flags or from the JSON body of ``PUT /_sandbox/faults``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A probability, decided per API request by the sandbox's seeded random generator.
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
#: A non-negative duration in seconds.
Seconds = Annotated[float, Field(ge=0.0)]

#: What a queued ``fail_next`` entry answers instead of serving the request.
FAIL_NEXT_KINDS = ("500", "503", "429", "drop")


class SandboxConfig(BaseModel):
    """What the sandbox serves; fixed for the life of a server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The bearer token accepted at start (rotate it at runtime with ``set_token``).
    token: str = "sandbox-token"  # noqa: S105 - a local dev token, documented
    #: Items per page of every list endpoint (the real API's size is not documented).
    page_size: Annotated[int, Field(ge=1)] = 100
    #: Seconds from a purchase POST until its vouchers exist (overridable by a fault).
    generation_delay_s: Seconds = 2.0
    #: ``nextLink`` as a full URL or as a path plus query; clients must handle both.
    next_link_style: Literal["absolute", "relative"] = "absolute"
    #: A filtered result set larger than this answers 422 (the document's 10,000).
    record_limit: Annotated[int, Field(ge=1)] = 10_000
    #: The partners/programs file; None means the bundled ``data/sample.json``.
    data_path: Path | None = None
    #: Seed of the random generators (ids, codes and fault decisions); None = unpredictable.
    seed: int | None = None
    #: The e-mail the ``purchasedByEmail`` filter matches for purchases made through the API.
    api_user_email: str = "api@certiverse.example"


class FaultSettings(BaseModel):
    """How the sandbox misbehaves; replaced as a whole at runtime. Defaults mean "no fault".

    Rates are probabilities per API request. ``fail_next`` is a deterministic queue: each API
    request pops its first entry and answers it instead of being served.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_s: Seconds = 0.0
    error_500_rate: Rate = 0.0
    error_503_rate: Rate = 0.0
    error_429_rate: Rate = 0.0
    drop_rate: Rate = 0.0
    #: An outage: every API request answers 503 (with ``Retry-After``) for this many seconds
    #: from when these faults are set, then the sandbox serves again.
    outage_s: Seconds = 0.0
    #: Sent as ``Retry-After`` on 429 and 503 answers.
    retry_after_s: Annotated[int, Field(ge=0)] = 1
    #: Entries among "500", "503", "429", "drop"; consumed one per API request.
    fail_next: list[str] = Field(default_factory=list)
    #: After a purchase POST is committed, answer 500 or drop the connection anyway.
    post_commit_fault: Literal["500", "drop"] | None = None
    post_commit_fault_rate: Rate = 1.0
    #: Overrides ``SandboxConfig.generation_delay_s`` for purchases POSTed while set.
    generation_delay_s: Seconds | None = None
    #: Probability that a purchase ends ``CheckoutFailed`` with no vouchers.
    generation_failure_rate: Rate = 0.0
    #: The status reads ``Complete`` this long before the codes become listable.
    complete_before_codes_s: Seconds = 0.0

    @field_validator("fail_next", mode="before")
    @classmethod
    def _normalise_fail_next(cls, value: object) -> object:
        """Accept 500 as well as "500" and any case of "drop"; reject anything else."""
        if not isinstance(value, list | tuple):
            return value
        kinds = [str(entry).strip().lower() for entry in value]
        unknown = [kind for kind in kinds if kind not in FAIL_NEXT_KINDS]
        if unknown:
            raise ValueError(f"fail_next entries must be among {FAIL_NEXT_KINDS}, got {unknown}")
        return kinds

    @field_validator("post_commit_fault", mode="before")
    @classmethod
    def _normalise_post_commit(cls, value: object) -> object:
        if isinstance(value, int | str) and not isinstance(value, bool):
            text = str(value).strip().lower()
            return text or None
        return value
