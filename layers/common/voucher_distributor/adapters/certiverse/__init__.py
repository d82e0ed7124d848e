"""The Certiverse Voucher Partner API adapter: client, retry policy, token providers, errors."""

from voucher_distributor.adapters.certiverse.client import CertiverseClient
from voucher_distributor.adapters.certiverse.errors import (
    AmbiguousName,
    CertiverseBadRequest,
    CertiverseError,
    CertiverseMisconfigured,
    CertiverseRecordLimitExceeded,
    CertiverseServerError,
    CertiverseUnauthorized,
    CertiverseValidationError,
    NameNotFound,
    PurchaseOutcomeUnknown,
    TokenUnavailable,
    UnsafeNextLink,
)
from voucher_distributor.adapters.certiverse.retry import NO_RETRY, RetryPolicy
from voucher_distributor.adapters.certiverse.tokens import (
    EnvToken,
    SecretsManagerToken,
    StaticToken,
    TokenProvider,
    token_from_secret,
)

__all__ = [
    "NO_RETRY",
    "AmbiguousName",
    "CertiverseBadRequest",
    "CertiverseClient",
    "CertiverseError",
    "CertiverseMisconfigured",
    "CertiverseRecordLimitExceeded",
    "CertiverseServerError",
    "CertiverseUnauthorized",
    "CertiverseValidationError",
    "EnvToken",
    "NameNotFound",
    "PurchaseOutcomeUnknown",
    "RetryPolicy",
    "SecretsManagerToken",
    "StaticToken",
    "TokenProvider",
    "TokenUnavailable",
    "UnsafeNextLink",
    "token_from_secret",
]
