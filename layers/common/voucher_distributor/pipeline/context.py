"""What a use case needs from the outside world, built once per process (cold start)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voucher_distributor.adapters.callbacks import CallbackSender, SignedCallbacks
from voucher_distributor.adapters.certiverse import CertiverseClient
from voucher_distributor.adapters.events import Events
from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.notifications import Notifications
from voucher_distributor.adapters.queues import Queues
from voucher_distributor.adapters.scheduler import Scheduler
from voucher_distributor.adapters.ses import Ses
from voucher_distributor.adapters.storage import Storage
from voucher_distributor.settings import Settings

log = logging.getLogger("voucher_distributor.pipeline")


class MetricSink(Protocol):
    """Where counters go: Powertools Metrics in Lambda, a tally locally."""

    def count(self, name: str, value: float = 1, *, unit: str = "Count") -> None: ...


class NoMetrics:
    def count(self, name: str, value: float = 1, *, unit: str = "Count") -> None:
        """Discard: used where nobody reads metrics."""


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    storage: Storage
    queues: Queues
    events: Events
    certiverse: CertiverseClient
    metrics: MetricSink = field(default_factory=NoMetrics)
    callbacks: SignedCallbacks | None = None
    notifications: Notifications | None = None
    #: SES (SESv2), when the stack sends e-mail (SenderEmail set).
    ses: Ses | None = None
    #: EventBridge Scheduler (scheduled sends), when the stack sends e-mail.
    scheduler: Scheduler | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def now(self) -> int:
        return int(self.clock())


def build_services(settings: Settings, metrics: MetricSink | None = None) -> Services:
    """Wire the real adapters from the settings (boto3 clients honour AWS_ENDPOINT_URL)."""
    from voucher_distributor.adapters.certiverse import (  # noqa: PLC0415
        EnvToken,
        SecretsManagerToken,
        TokenProvider,
    )

    tokens: TokenProvider = (
        SecretsManagerToken(settings.certiverse_token_secret_arn)
        if settings.certiverse_token_secret_arn
        else EnvToken()
    )
    return Services(
        settings=settings,
        ledger=Ledger(settings.ledger_table, claim_workers=settings.claim_concurrency),
        storage=Storage(settings.inbox_bucket),
        queues=Queues(),
        events=Events(settings.event_bus_name),
        certiverse=CertiverseClient(settings.certiverse_base_url, tokens),
        metrics=metrics or NoMetrics(),
        callbacks=(
            SignedCallbacks(
                CallbackSender(
                    allow_loopback=settings.callback_allow_loopback,
                    timeout_s=settings.callback_timeout_seconds,
                ),
                _secret_reader(settings.callback_secret_arn),
            )
            if settings.callback_secret_arn
            else None
        ),
        notifications=(
            Notifications(settings.approval_topic_arn) if settings.approval_topic_arn else None
        ),
        ses=(
            Ses(configuration_set=settings.ses_configuration_set)
            if settings.email_enabled
            else None
        ),
        scheduler=Scheduler() if settings.email_enabled else None,
    )


def _secret_reader(secret_id: str) -> Callable[[], str]:
    def read() -> str:
        from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

        value = parameters.get_secret(secret_id, max_age=300)
        return value.decode() if isinstance(value, bytes) else str(value)

    return read
