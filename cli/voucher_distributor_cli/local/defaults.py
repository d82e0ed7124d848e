"""What a local stack runs with: the template, the sandbox's token, the local timings (seconds
instead of the deployed minutes, same code paths), the local sender and template parameters."""

from __future__ import annotations

from pathlib import Path

#: The repository's template: cli/voucher_distributor_cli/ -> repository root.
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"
SANDBOX_TOKEN = "local-sandbox-token"  # noqa: S105 - the local sandbox's throwaway token

#: Local timings: seconds instead of the deployed minutes, same code paths.
LOCAL_TUNING = {
    "POLL_BASE_DELAY_SECONDS": "1",
    "POLL_MAX_DELAY_SECONDS": "4",
    "INITIAL_CHECK_SECONDS": "1",
    # The lease must outlive the time from its renewal to the end of the POST (deployed: 180 s
    # against a 120 s function timeout); a delivery that finds it held is re-queued until then.
    "PURCHASE_LEASE_SECONDS": "3",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    # A Certiverse outage during pre-flight: the input is read again after 5 s, 15 s, 30 s and
    # 60 s (deployed 30 s, 2, 10 and 45 min), so a local run outlasts a two-minute outage.
    "INGEST_RETRY_DELAYS": "5,15,30,60",
    # An ingest that died (a crash, a timeout) holds its batch this long (deployed 960 s, past
    # the 900 s function timeout); the next delivery takes it over then.
    "INGEST_LEASE_SECONDS": "5",
    # Claims go to the in-process moto server, which shares this process's GIL: a few suffice.
    "CLAIM_CONCURRENCY": "4",
    # A report waiting for codes another batch is still buying looks again after a second.
    "REPORT_WAIT_SECONDS": "1",
    # A batch awaiting approval is looked at every second (its decision, its deadline).
    "APPROVAL_CHECK_SECONDS": "1",
    # An API client added or revoked (`api-client`) counts at once, not within a minute.
    "API_CLIENTS_CACHE_SECONDS": "0",
    # Callbacks may go to http:// and loopback receivers (an integrator's, on this machine);
    # the template never sets it, so deployed the https and public-address rules stay.
    "CALLBACK_ALLOW_LOOPBACK": "true",
    # The results are rewritten with the e-mail states 5 s after an event, not a minute (each
    # rewrite reads every row: every second would starve the sending of a large batch).
    "EMAIL_REFRESH_SECONDS": "5",
    # A paused SES account is looked at again every second (deployed: 15 minutes).
    "EMAIL_PAUSED_RETRY_SECONDS": "1",
    # A sending invocation hands the rest of its chunk on after 5 s (deployed 40 s): the local
    # functions share one lock, so `local up`'s API answers while a large batch is mailed.
    "EMAIL_SEND_BUDGET_SECONDS": "5",
}
#: The sender local runs mail from (moto's SES has it verified); ``SenderEmail=`` turns it off.
LOCAL_SENDER = "vouchers@voucher-distributor.example"
LOCAL_SENDER_NAME = "Voucher Distributor (local)"
#: The local SES's MaxSendRate (e-mails per second) unless the caller gives one: the rate of an
#: account out of the sandbox with a raised quota, so a demo's 2,500 e-mails take 2.5 s of
#: pacing, not 12 (tests and the bench give the local SES a lower one to meet its limit).
LOCAL_SES_RATE = 1000.0
#: Template parameters of local runs unless the caller gives them: a callback's attempts over
#: ~15 seconds instead of a day (five attempts, as deployed eight).
LOCAL_PARAMETERS = {"CallbackRetrySchedule": "1,2,4,8"}
