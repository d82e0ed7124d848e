"""Bodies of the pipeline's own SQS messages, and of the HR request it accepts."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)
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
    #: The chain's token for this step (the chunk records the live one); None from a sender
    #: that predates it (taken as the live chain if the chunk records none).
    token: str | None = None


class ReportMessage(Message):
    batch_id: str = Field(min_length=1)
    #: ``"approval"``: look at a batch waiting for approval (decided, or past its deadline?)
    #: instead of reporting it.
    check: str | None = None


class EmailMessage(Message):
    """Send the e-mails of one assigned chunk, from row ``from_row`` on (the rest of a chunk a
    sending invocation handed on, or one that waits out throttling or a pause)."""

    batch_id: str = Field(min_length=1)
    chunk_no: int = Field(ge=0)
    from_row: int = Field(default=0, ge=0)


class SendFireMessage(Message):
    """A batch's scheduled send is due: EventBridge Scheduler's one-time schedule put it on the
    e-mail queue (``fireAt``: the send time it was made for)."""

    batch_id: str = Field(min_length=1)
    fire_at: int = Field(ge=0)


class CallbackMessage(Message):
    """One attempt (or a hop toward it) of a callback delivery: which, of which round."""

    batch_id: str = Field(min_length=1)
    delivery: str = Field(min_length=1)  # the delivery's event slug
    round: int = Field(default=0, ge=0)
    attempt: int = Field(default=1, ge=1)


#: Validation context key: a local run lets callbacks go to loopback receivers over http://.
ALLOW_LOOPBACK_CALLBACKS = "allow_loopback_callbacks"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class RequestRecipient(Message):
    email: str
    first_name: str = ""
    last_name: str = ""
    external_id: str = ""
    #: Buy a new voucher even if this person already holds one for the program.
    reissue: bool = False
    #: This person's e-mail language (a template folder such as ``de``); else the request's.
    language: str = Field(default="", max_length=35)


class DistributionRequest(Message):
    """An HR system's request (JSON on the request queue); unknown fields are ignored."""

    request_id: str = Field(min_length=1, max_length=200)
    partner_name: str | None = None
    program_name: str | None = None
    notes: str = ""
    recipients_s3_uri: str | None = Field(default=None, alias="recipientsS3Uri")
    #: One of the two is required (``recipients`` not empty): a request naming nobody is refused.
    #: (Declared after ``recipientsS3Uri`` so that its check sees it.)
    recipients: list[RequestRecipient] | None = Field(default=None, validate_default=True)
    callback_url: str | None = None
    #: Go through ingest and pre-flight, report ``would-assign``; buy and claim nothing. Only
    #: a JSON boolean: ``"yes"`` or ``1`` is refused, never taken as true.
    dry_run: StrictBool = False
    #: ``false``: mail nobody; the results still list every code (the stack's e-mail otherwise).
    send_email: StrictBool = True
    #: The e-mail's language for recipients that name none (else the stack's DefaultLanguage).
    language: str = Field(default="", max_length=35)
    #: Send the e-mails at this moment (ISO 8601 with an offset or ``Z``, in the future, at most
    #: 365 days ahead); the codes are bought and assigned at once.
    send_at: str | None = None

    @field_validator("send_at")
    @classmethod
    def _iso_with_offset(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "zZ" else text)
        except ValueError:
            moment = None
        if moment is None or "T" not in text.upper() or moment.tzinfo is None:
            raise ValueError(
                "must be an ISO 8601 time with an offset, like 2027-03-01T09:00:00Z or "
                "2027-03-01T09:00:00+01:00"
            )
        return text

    @field_validator("callback_url")
    @classmethod
    def _https_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.startswith("https://"):
            return value
        local = bool((info.context or {}).get(ALLOW_LOOPBACK_CALLBACKS))
        if local and value.startswith("http://") and _loopback_host(value):
            return value
        raise ValueError("callbackUrl must be an https:// URL")

    @field_validator("recipients_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("recipientsS3Uri must look like s3://bucket/key.csv")
        return value

    @field_validator("recipients")
    @classmethod
    def _some_recipients(
        cls, value: list[RequestRecipient] | None, info: ValidationInfo
    ) -> list[RequestRecipient] | None:
        if value is not None and not value:
            raise ValueError(
                "recipients is empty: list at least one person, or give recipientsS3Uri "
                "(s3://bucket/key.csv)"
            )
        if (
            value is None
            and "recipients_s3_uri" in info.data
            and not info.data["recipients_s3_uri"]
        ):
            # Neither way of naming the people: nothing to distribute, refused whole.
            raise ValueError(
                "required: give recipients (a list of people) or recipientsS3Uri "
                "(s3://bucket/key.csv); the request names nobody"
            )
        return value


def _loopback_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK_HOSTS or host.startswith("127.")
