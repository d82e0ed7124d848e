"""Settings of every function, read from the environment once at cold start and validated there,
so a misconfigured deployment fails on its first invocation with a message naming the variable."""

from __future__ import annotations

import os
import re
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: The template's CallbackRetrySchedule default (domain.callbacks.DEFAULT_RETRY_SCHEDULE).
_DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"
#: 30 s, 2 min, 10 min, 45 min: about an hour in all.
_DEFAULT_INGEST_RETRY_DELAYS = "30,120,600,2700"
_SCHEDULE = re.compile(r"^\s*[1-9][0-9]*(\s*,\s*[1-9][0-9]*)*\s*$")


class SettingsError(RuntimeError):
    """The function's environment is incomplete or invalid; fix the stack's configuration."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    ledger_table: str = Field(min_length=1)
    inbox_bucket: str = Field(min_length=1)
    purchase_queue_url: str = Field(min_length=1)
    poll_queue_url: str = Field(min_length=1)
    report_queue_url: str = Field(min_length=1)
    event_bus_name: str = "default"
    certiverse_base_url: str = Field(min_length=1)
    #: Secrets Manager ARN of the token; empty means "read CERTIVERSE_TOKEN" (local runs).
    certiverse_token_secret_arn: str = ""
    #: The e-mail of the Certiverse API user the token belongs to: narrows the look for an
    #: earlier purchase (``purchasedByEmail``) when a program lists over 10,000 purchases.
    certiverse_api_user_email: str = ""
    callback_secret_arn: str = ""
    #: The queue of callback deliveries (one message per attempt or hop); empty: no callbacks.
    callback_queue_url: str = ""
    #: Seconds between a callback's attempts (template parameter CallbackRetrySchedule).
    callback_retry_schedule: str = _DEFAULT_RETRY_SCHEDULE
    #: Local runs only (never set by the template): callbacks may go to http:// and loopback
    #: addresses, so an integrator can test a receiver on their machine.
    callback_allow_loopback: bool = False
    #: Each callback attempt's HTTP timeout; the lease on an attempt outlasts it and the function.
    callback_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: The CloudFormation stack id; its hash tags this stack's purchase markers, so two stacks
    #: on one Certiverse account never adopt each other's purchases.
    stack_id: str = ""
    default_partner_name: str = ""
    default_program_name: str = ""
    #: A purchase whose codes do not exist by then fails its chunk.
    poll_deadline_seconds: int = Field(default=86_400, ge=1)
    #: First delay of the poll continuation; doubles (with jitter) up to ``poll_max_delay_seconds``.
    poll_base_delay_seconds: int = Field(default=15, ge=0, le=900)
    poll_max_delay_seconds: int = Field(default=900, ge=0, le=900)
    #: How long the purchase invocation itself waits for the codes before handing over to polling.
    initial_check_seconds: float = Field(default=5.0, ge=0)
    #: Lease on a chunk's "purchasing" state. Longer than the function timeout, so a crashed
    #: buyer's POST can never still be in flight when another worker takes the chunk over.
    purchase_lease_seconds: int = Field(default=180, ge=1)
    #: Deliveries of one chunk message after which a chunk that still cannot be bought fails.
    max_purchase_attempts: int = Field(default=6, ge=1)
    #: Deliveries of one input after which a Certiverse outage during pre-flight fails its rows
    #: (until then the input goes back to its queue, to be read again once the outage passes).
    #: Below the ingest queues' maxReceiveCount (6), so the last try is never a DLQ's.
    max_ingest_attempts: int = Field(default=5, ge=1)
    #: Seconds an input waits before its next delivery after delivery 1, 2, ... met a Certiverse
    #: outage during pre-flight (its message's visibility is set to it; the last entry repeats;
    #: a longer ``Retry-After`` wins). The default waits about an hour in all over 5 deliveries.
    ingest_retry_delays: str = _DEFAULT_INGEST_RETRY_DELAYS
    #: Lease of one delivery on its batch while it ingests. Longer than the ingest functions'
    #: timeout (900 s), so a lease runs out only once the delivery holding it has surely ended.
    ingest_lease_seconds: int = Field(default=960, ge=1)
    #: Inline recipients accepted in one SQS request (larger lists: recipientsS3Uri).
    max_inline_recipients: int = Field(default=1_000, ge=1)
    #: Largest CSV accepted, in bytes.
    max_csv_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    #: How long a report waits before looking again for codes another batch is still buying.
    report_wait_seconds: int = Field(default=60, ge=1, le=900)
    #: After this long (from the batch's start) it stops waiting for them: those rows fail. The
    #: default outlasts the poll deadline (24 h) by an hour.
    holder_wait_seconds: int = Field(default=90_000, ge=1)
    #: Issuance limits (template parameters; 0 turns one off). A larger input is refused whole.
    max_recipients_per_batch: int = Field(default=100_000, ge=0)
    #: Vouchers bought per stage per UTC day, counted in the ledger across every batch.
    daily_voucher_limit: int = Field(default=25_000, ge=0)
    #: A batch that would buy more than this waits in AWAITING_APPROVAL.
    approval_threshold: int = Field(default=5_000, ge=0)
    #: A batch still waiting after this long is rejected by itself.
    approval_timeout_hours: float = Field(default=72, gt=0)
    #: How often a waiting batch is looked at (its deadline; a decision is also carried out at
    #: once when it is made).
    approval_check_seconds: int = Field(default=900, ge=1, le=900)
    #: SNS topic told of every batch awaiting approval (e-mail subscriptions); empty: none.
    approval_topic_arn: str = ""
    #: An unused code this many days from its expiry is announced once (``Vouchers Expiring``);
    #: 0 turns the notices off.
    expiry_notice_days: int = Field(default=30, ge=0)
    #: Accept programs with ``enforceAssignedEmailToBookExam`` (the team assigns each code in
    #: the Certiverse portal); otherwise pre-flight refuses them.
    accept_portal_assignment: bool = False
    #: Holdings claimed at once while ingesting (one conditional write each, in parallel).
    claim_concurrency: int = Field(default=16, ge=1, le=64)
    #: Where the HTTP API hands distributions to the pipeline (the HR request queue).
    request_queue_url: str = ""
    #: The HTTP API's clients (Secrets Manager, JSON ``{"clients": {...}}``); empty: none.
    api_clients_secret_arn: str = ""
    #: Largest request body the API accepts. A Lambda event carries at most 6 MB, and a CSV
    #: body arrives base64-encoded (4/3 larger): 4 MB leaves room for the rest of the event.
    api_max_body_bytes: int = Field(default=4_000_000, ge=1, le=4_400_000)
    #: Whoever submitted a batch may also approve or reject it (template parameter
    #: ApprovalBySubmitter; off by default: separation of duties).
    approval_by_submitter: bool = False
    #: The HTTP API's base URL (the report function's, for the callback's ``assignmentsUrl``).
    api_base_url: str = ""
    #: How long API clients are cached: a revoked client is refused within this many seconds.
    api_clients_cache_seconds: int = Field(default=60, ge=0, le=3600)

    #: The voucher e-mail (template parameters). Empty SENDER_EMAIL: no e-mail is sent.
    sender_email: str = ""
    sender_name: str = ""
    reply_to_email: str = ""
    booking_url: str = ""
    support_email: str = ""
    #: The e-mail's language for a row whose input names none (template parameter
    #: DefaultLanguage): the ``templates/…/<language>/`` folder looked for first.
    default_language: str = Field(default="en", max_length=35)
    #: How long a warm function keeps the accepted templates it read (an accepted upload is
    #: used within this many seconds).
    template_cache_seconds: int = Field(default=60, ge=0, le=3600)
    #: The queue of e-mail sends (one message per chunk, or the rest of one); empty: no e-mail.
    email_queue_url: str = ""
    #: The SES configuration set whose event destination records each e-mail's fate.
    ses_configuration_set: str = ""
    #: E-mails per second over the whole stack; 0: read SES's own MaxSendRate (GetAccount).
    max_send_rate: float = Field(default=0, ge=0)
    #: Sending invocations at once (the event source's MaximumConcurrency): each sends at
    #: max_send_rate / this.
    email_send_concurrency: int = Field(default=2, ge=1)
    #: Seconds one sending invocation sends for before handing the rest of its chunk on (well
    #: under the function timeout).
    email_send_budget_seconds: float = Field(default=40, gt=0)
    #: The results are rewritten with the e-mail states at most this often per batch.
    email_refresh_seconds: int = Field(default=60, ge=1, le=900)
    #: While SES sending is paused, the waiting e-mails are tried again this often.
    email_paused_retry_seconds: int = Field(default=900, ge=1, le=900)

    #: Scheduled sends: the e-mail queue's ARN (the one-time schedules' target), the role
    #: EventBridge Scheduler sends with, and the schedules' name prefix (the stack's).
    email_queue_arn: str = ""
    send_schedule_role_arn: str = ""
    send_schedule_prefix: str = "voucher-distributor"
    #: Days before a code's expiry its holder is reminded (``ReminderDays``); empty: never.
    reminder_days: str = "14,3"

    @field_validator("reminder_days")
    @classmethod
    def _reminder_days(cls, value: str) -> str:
        if value.strip() and not _SCHEDULE.match(value):
            raise ValueError("must be comma-separated whole days of at least 1, e.g. 14,3")
        return value

    @property
    def reminder_schedule(self) -> tuple[int, ...]:
        """The reminder days, largest first; () when reminders are off."""
        days = {int(part) for part in self.reminder_days.split(",") if part.strip()}
        return tuple(sorted(days, reverse=True))

    @property
    def email_enabled(self) -> bool:
        return bool(self.sender_email and self.email_queue_url)

    @field_validator("certiverse_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("callback_retry_schedule", "ingest_retry_delays")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not _SCHEDULE.match(value):
            raise ValueError("must be comma-separated whole seconds of at least 1, e.g. 5,300")
        return value

    @property
    def callback_schedule(self) -> tuple[int, ...]:
        """The waits between a callback's attempts, in seconds."""
        return tuple(int(part) for part in self.callback_retry_schedule.split(","))

    @property
    def ingest_retry_schedule(self) -> tuple[int, ...]:
        """The waits before an input's next delivery after an outage, in seconds."""
        return tuple(int(part) for part in self.ingest_retry_delays.split(","))

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        values = {name: env[name.upper()] for name in cls.model_fields if name.upper() in env}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise SettingsError(f"invalid function environment: {problems}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, validated once (cold start)."""
    return Settings.from_environ()
