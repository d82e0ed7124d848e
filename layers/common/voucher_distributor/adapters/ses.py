"""Amazon SES (SESv2): send one voucher e-mail, read the account's send rate.

Every error SES can answer is turned into one of four typed errors, each with what the pipeline
does about it:

- :class:`SesThrottled`: too many requests, or the daily quota: the e-mail goes back to its
  queue with a delay; nothing is lost.
- :class:`SesSendingStopped`: sending is paused or the account suspended: sending stops, an
  alarm fires, the e-mails wait on the queue.
- :class:`SesRejected`: SES refused this message (``MessageRejected``, an unverified MAIL FROM,
  a bad request): the row ends ``failed`` with SES's reason.
- :class:`SesOutcomeUnknown`: the call may or may not have sent it (a timeout after the request
  went out, a 5xx): the row stays ``unknown`` until SES's Send event says, and is never re-sent
  on its own.

The client makes exactly one attempt per call (botocore's own retries could send twice).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from voucher_distributor.domain.email_states import DELIVERY_TAG


class SesError(RuntimeError):
    """SES did not take the e-mail; the subclass says what to do."""


class SesNotSent(SesError):
    """SES surely sent nothing, for now (throttled, paused, unreachable): the claim goes back
    and the e-mail waits; the subclass says how long."""


class SesThrottled(SesNotSent):
    """SES asked us to slow down (send rate) or the day's quota is spent: send it later."""

    def __init__(self, message: str, *, retry_after: int, daily_quota: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.daily_quota = daily_quota


class SesSendingStopped(SesNotSent):
    """Sending is paused (configuration set or account) or the account suspended: stop, alarm,
    and let the e-mails wait until an operator resumes sending."""


class SesRejected(SesError):
    """SES refused this message for good: the row is ``failed`` with this reason."""


class SesOutcomeUnknown(SesError):
    """The call may have sent the message: leave the row ``unknown`` (SES's Send event says)."""


class SesUnavailable(SesNotSent):
    """SES could not be reached before the request went out: nothing was sent, try later."""


#: Seconds before a throttled e-mail is tried again (the send rate is per second).
THROTTLE_RETRY_SECONDS = 2
#: The daily quota resets over a rolling 24 hours: look again at SQS's longest delay.
QUOTA_RETRY_SECONDS = 900

_THROTTLED = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
_QUOTA = frozenset({"LimitExceededException", "SendingQuotaExceeded", "MaxSendingRateExceeded"})
_STOPPED = frozenset({"SendingPausedException", "AccountSuspendedException"})
_REJECTED = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "NotFoundException",
        "InvalidParameterValue",
    }
)


@dataclass(frozen=True)
class SentEmail:
    message_id: str


def classify(exc: ClientError) -> SesError:
    """The typed error for an SES error answer (exposed for the tests and the local SES)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _QUOTA or "quota" in message.lower():
        return SesThrottled(
            f"SES daily sending quota reached ({code}: {message})",
            retry_after=QUOTA_RETRY_SECONDS,
            daily_quota=True,
        )
    if code in _THROTTLED:
        return SesThrottled(
            f"SES is throttling ({code}: {message})", retry_after=THROTTLE_RETRY_SECONDS
        )
    if code in _STOPPED:
        return SesSendingStopped(
            f"SES sending is stopped ({code}: {message}); resume sending in the SES console "
            "(or `aws sesv2 put-account-sending-attributes --sending-enabled`); the e-mails wait"
        )
    if code in _REJECTED or 400 <= status < 500:
        return SesRejected(f"SES refused the message: {code}: {message}")
    return SesOutcomeUnknown(f"SES answered {code or status}: {message}")


class Ses:
    """One SESv2 client: ``send`` a raw message, read ``max_send_rate``."""

    def __init__(self, *, sesv2: Any = None, configuration_set: str = "") -> None:
        self._given = sesv2
        self.configuration_set = configuration_set
        self._account_rate: float | None = None

    @cached_property
    def _client(self) -> Any:
        return self._given or boto3.client(
            "sesv2",
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=3,
                read_timeout=10,
            ),
        )

    def send(
        self, raw: bytes, *, from_address: str, to_address: str, delivery_id: str
    ) -> SentEmail:
        """Send ``raw`` (RFC 5322 bytes) to ``to_address``; the typed errors above say why not."""
        request: dict[str, Any] = {
            "FromEmailAddress": from_address,
            "Destination": {"ToAddresses": [to_address]},
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": [{"Name": DELIVERY_TAG, "Value": delivery_id}],
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
        try:
            answer = self._client.send_email(**request)
        except ClientError as exc:
            raise classify(exc) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise SesUnavailable(f"SES could not be reached: {exc}") from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            raise SesOutcomeUnknown(f"no answer from SES after sending: {exc}") from exc
        return SentEmail(message_id=str(answer["MessageId"]))

    def max_send_rate(self) -> float:
        """The account's ``MaxSendRate`` (e-mails per second), from SESv2 ``GetAccount``: asked
        once per adapter (one per cold start), since every sending invocation paces by it."""
        if self._account_rate is not None:
            return self._account_rate
        try:
            account = self._client.get_account()
        except ClientError as exc:
            raise classify(exc) from exc
        rate = float(account.get("SendQuota", {}).get("MaxSendRate", 0) or 0)
        if rate <= 0:
            raise SesUnavailable(
                "SES GetAccount gave no MaxSendRate; set the MaxSendRate parameter"
            )
        self._account_rate = rate
        return rate


def raw_data(request_content: dict[str, Any]) -> bytes:
    """The bytes of a SendEmail request's Raw content (as boto3 or the wire carries them)."""
    data = request_content["Raw"]["Data"]
    return data if isinstance(data, bytes) else base64.b64decode(data)
