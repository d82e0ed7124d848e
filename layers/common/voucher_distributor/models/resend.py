"""A resend: which rows of a batch to mail again, and the e-mail queue's message for one row."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ResendMessage(BaseModel):
    """Mail row ``resend_row``'s code again to ``to`` (the e-mail queue; the sending function).

    ``replacing`` is the row's delivery id when the resend was asked ("" for a row never
    mailed): the new claim is conditional on it, so a repeated message sends nothing.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", defer_build=True
    )

    batch_id: str = Field(min_length=1)
    resend_row: int = Field(ge=1)
    chunk_no: int = Field(ge=0)
    to: str = Field(min_length=3)
    replacing: str = ""


class ResendSelection(BaseModel):
    """Which rows: exactly one of ``row``, ``email``, ``status``; ``to`` needs a single row."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    row: int | None = Field(default=None, ge=1)
    email: str | None = None
    status: str | None = None
    to: str | None = None
    force: bool = False
