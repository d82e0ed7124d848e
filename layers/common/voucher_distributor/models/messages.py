"""Bodies of the pipeline's own SQS messages, and of the HR request it accepts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class Message(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", defer_build=True
    )


class ChunkMessage(Message):
    batch_id: str = Field(min_length=1)
    chunk_no: int = Field(ge=0)


class PollMessage(ChunkMessage):
    attempt: int = Field(default=1, ge=1)


class ReportMessage(Message):
    batch_id: str = Field(min_length=1)
    #: ``"approval"``: look at a batch waiting for approval (decided, or past its deadline?)
    #: instead of reporting it.
    check: str | None = None


class RequestRecipient(Message):
    email: str
    first_name: str = ""
    last_name: str = ""
    external_id: str = ""
    #: Buy a new voucher even if this person already holds one for the program.
    reissue: bool = False


class DistributionRequest(Message):
    """An HR system's request (JSON on the request queue); unknown fields are ignored."""

    request_id: str = Field(min_length=1, max_length=200)
    partner_name: str | None = None
    program_name: str | None = None
    notes: str = ""
    recipients: list[RequestRecipient] | None = None
    recipients_s3_uri: str | None = Field(default=None, alias="recipientsS3Uri")
    callback_url: str | None = None
    #: Go through ingest and pre-flight, report ``would-assign``; buy and claim nothing.
    dry_run: bool = False

    @field_validator("callback_url")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("callbackUrl must be an https:// URL")
        return value

    @field_validator("recipients_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("recipientsS3Uri must look like s3://bucket/key.csv")
        return value
