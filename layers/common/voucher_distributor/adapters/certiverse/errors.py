"""Typed errors of the Certiverse adapter; each says what the caller or the operator should do."""

from __future__ import annotations


class CertiverseError(Exception):
    """Base of every error the Certiverse adapter raises."""

    #: Whether trying the same call again later may succeed.
    retryable: bool = False


class CertiverseValidationError(CertiverseError, ValueError):
    """A request the API documents as invalid, refused before anything was sent. Fix the input."""


class CertiverseBadRequest(CertiverseError):
    """400: the API refused the request (bad filter, unknown partner/program, priced program...)."""

    def __init__(self, message: str, *, status_code: int = 400, body: object = None) -> None:
        super().__init__(f"Certiverse refused the request ({status_code}): {message}")
        self.api_message = message
        self.status_code = status_code
        self.body = body


class CertiverseMisconfigured(CertiverseBadRequest):
    """404/405 or a reply that is not the API's JSON: the base URL does not point at the API."""

    def __init__(self, message: str, *, status_code: int, url: str, base_url: str) -> None:
        super().__init__(message, status_code=status_code)
        self.url = url
        self.base_url = base_url

    def __str__(self) -> str:
        return (
            f"the Certiverse base URL looks wrong: {self.url} answered {self.api_message}. "
            f"Tried base URL {self.base_url}; expected the Voucher Partner API's base, "
            "https://HOST/api (the host alone also works). Fix CertiverseBaseUrl (or "
            "--certiverse-url), then run retry-failed for this batch"
        )


class CertiverseUnauthorized(CertiverseError):
    """401: the token is missing, wrong, expired or lacks PartnerManageVouchers."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            "Certiverse rejected the API token (401). Check that the token secret holds a current "
            "token of a user with the PartnerManageVouchers function point"
            + (f": {message}" if message else ".")
        )


class CertiverseRecordLimitExceeded(CertiverseError):
    """422: the filter matches more than 10,000 records. Narrow the filter."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            "Certiverse refused the listing: the filter matches more than the 10,000 record "
            "limit (422); narrow it" + (f" ({message})" if message else "")
        )


class CertiverseServerError(CertiverseError):
    """5xx, 429, timeouts or dropped connections that outlasted the retry budget."""

    retryable = True

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: The last answer's ``Retry-After``, in seconds, when it gave one.
        self.retry_after_s = retry_after_s


class PurchaseOutcomeUnknown(CertiverseServerError):
    """The purchase POST may or may not have been carried out (timeout, 5xx, dropped reply).

    Never POST again blindly: look the purchase up by its notes marker and adopt it.
    """


class UnsafeNextLink(CertiverseError):
    """A ``nextLink`` pointed away from the configured API origin; the token is not sent there."""


class NameNotFound(CertiverseError, LookupError):
    """No partner or program has exactly this name."""


class AmbiguousName(CertiverseError, LookupError):
    """More than one partner or program has this name when compared case-insensitively."""


class TokenUnavailable(CertiverseError):
    """No API token could be read (unset variable, empty or unreadable secret)."""
