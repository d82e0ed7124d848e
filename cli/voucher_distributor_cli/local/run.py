"""The whole pipeline on this machine: template.yaml's resources in moto, the handlers in-process,
Certiverse played by the sandbox (or any compatible server).

``LocalPipeline`` is what ``voucher-distributor local run``, ``make demo`` and the end-to-end tests
share: submit a CSV (as an S3 upload under incoming/) or an HR request (on the request queue), pump
the events the way the template wires them until the batch ends, then read what it produced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.domain.batches import csv_batch_id, request_batch_id, short_batch_id
from voucher_distributor.domain.email_states import SETTLED
from voucher_distributor.domain.outcomes import tally_chunks
from voucher_distributor.domain.results_csv import read_results
from voucher_distributor.models.ledger import BatchRecord, BatchStatus, ChunkState, DeliveryState
from voucher_distributor.pipeline.report import deliveries_csv_key
from voucher_distributor.pipeline.requests import refusal_key
from voucher_distributor_cli.arguments import command_hint
from voucher_distributor_cli.local.runner import LocalLambdas, MotoStack, moto_fixes, sqs_record
from voucher_distributor_cli.local.runner.local_ses import LocalSes, activate
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

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
    # The results are rewritten with the e-mail states a second after an event, not a minute.
    "EMAIL_REFRESH_SECONDS": "1",
    # A paused SES account is looked at again every second (deployed: 15 minutes).
    "EMAIL_PAUSED_RETRY_SECONDS": "1",
    # A sending invocation hands the rest of its chunk on after 5 s (deployed 40 s): the local
    # functions share one lock, so `local up`'s API answers while a large batch is mailed.
    "EMAIL_SEND_BUDGET_SECONDS": "5",
}
#: The sender local runs mail from (moto's SES has it verified); ``SenderEmail=`` turns it off.
LOCAL_SENDER = "vouchers@voucher-distributor.example"
LOCAL_SENDER_NAME = "Voucher Distributor (local)"
#: The local SES's MaxSendRate (e-mails per second) unless the caller gives one.
LOCAL_SES_RATE = 200.0
#: Template parameters of local runs unless the caller gives them: a callback's attempts over
#: ~15 seconds instead of a day (five attempts, as deployed eight).
LOCAL_PARAMETERS = {"CallbackRetrySchedule": "1,2,4,8"}
FINAL_STATUSES = frozenset({BatchStatus.DONE, BatchStatus.FAILED})


class LocalRunError(RuntimeError):
    """The local run could not complete (a timeout, or an unreadable input)."""


@dataclass
class Progress:
    """What the run has done so far, read from the ledger."""

    status: str = "waiting"
    rows: int = 0
    rejected: int = 0
    chunks: int = 0
    purchases: int = 0
    vouchers_ready: int = 0
    assigned: int = 0
    failed: int = 0
    existing: int = 0
    #: E-mails by state (None: the batch mails nobody).
    emails: dict[str, int] | None = None

    def line(self) -> str:
        return (
            f"[{self.status:>10}] rows read {self.rows:,} | rejected {self.rejected:,} | "
            + (f"existing {self.existing:,} | " if self.existing else "")
            + f"purchases {self.purchases}/{self.chunks} | "
            f"vouchers ready {self.vouchers_ready:,} | assigned {self.assigned:,}"
            + (f" | failed {self.failed:,}" if self.failed else "")
            + (self._email_part() if self.emails is not None else "")
        )

    def _email_part(self) -> str:
        assert self.emails is not None
        mailed = sum(n for state, n in self.emails.items() if state != "failed")
        return f" | e-mails sent {mailed:,} | bounced {self.emails.get('bounced', 0):,}"


@dataclass
class RunResult:
    batch_id: str
    summary: dict[str, Any]
    results_csv: Path | None
    summary_json: Path | None
    rows: list[dict[str, str]] = field(default_factory=list)
    #: The input this result answers (``local run`` sets it).
    input: Path | None = None
    #: The request was refused at the door: its refusal (``results/requests/invalid/…``) and
    #: where it was copied. Then there is no batch: ``summary`` is the refusal itself.
    refusal_copy: Path | None = None
    #: The e-mail history beside the results (``<name>.deliveries.csv``), when the batch mails.
    deliveries_csv: Path | None = None
    #: Where the run's e-mails are, one ``.eml`` each.
    mail_dir: Path | None = None

    @property
    def refused(self) -> bool:
        return self.summary.get("status") == "refused"

    def final_line(self) -> dict[str, Any]:
        """The one JSON object ``local run`` prints last."""
        where = {"input": str(self.input)} if self.input is not None else {}
        if self.refused:
            return {
                **where,
                "batchId": self.batch_id or None,
                "status": "refused",
                "error": self.summary.get("error"),
                "problems": self.summary.get("problems", []),
                "results": {"error": str(self.refusal_copy) if self.refusal_copy else None},
            }
        return {
            **where,
            "batchId": self.batch_id,
            "status": self.summary.get("status"),
            **({"dryRun": True} if self.summary.get("dryRun") else {}),
            "counts": self.summary.get("counts"),
            "blankLines": self.summary.get("blankLines", 0),
            "purchases": [
                {
                    "purchaseCode": p.get("purchaseCode"),
                    "quantity": p.get("quantity"),
                    "partner": p.get("partner"),
                    "program": p.get("program"),
                    "state": p.get("state"),
                }
                for p in self.summary.get("purchases", [])
            ],
            "results": {
                "csv": str(self.results_csv) if self.results_csv else None,
                "summary": str(self.summary_json) if self.summary_json else None,
            },
            **({"error": self.summary["error"]} if self.summary.get("error") else {}),
            **{k: self.summary[k] for k in ("retryOf", "retriedBy") if self.summary.get(k)},
            **(
                {"callbacks": _callback_counts(self.summary)} if "callbacks" in self.summary else {}
            ),
            **({"emails": self.summary["emails"]} if "emails" in self.summary else {}),
            **({"mailDir": str(self.mail_dir)} if self.mail_dir is not None else {}),
        }


def _callback_counts(summary: dict[str, Any]) -> dict[str, int]:
    """The summary's callback deliveries by state (each one's attempts are in the summary)."""
    counts = {"delivered": 0, "pending": 0, "failed": 0}
    for delivery in summary.get("callbacks") or []:
        counts[str(delivery.get("state"))] = counts.get(str(delivery.get("state")), 0) + 1
    return counts


class LocalPipeline:
    """The template's stack in moto plus its functions, pointed at a Certiverse server."""

    def __init__(
        self,
        *,
        certiverse_url: str,
        certiverse_token: str,
        template: Path = DEFAULT_TEMPLATE,
        default_partner: str = "",
        default_program: str = "",
        log_stream: IO[str] | None = None,
        tuning: dict[str, str] | None = None,
        retry_visibility_s: int = 2,
        parameters: dict[str, str] | None = None,
        email: bool = False,
        mail_dir: Path | None = None,
        ses_rate: float = LOCAL_SES_RATE,
    ) -> None:
        """``email``: mail each assigned code from :data:`LOCAL_SENDER` unless ``parameters``
        name a ``SenderEmail`` (empty: none); each message sent is written to ``mail_dir``.
        ``ses_rate``: the local SES's send-rate limit (and the MaxSendRate it reports)."""
        resolved = {
            **LOCAL_PARAMETERS,
            **({"SenderEmail": LOCAL_SENDER, "SenderName": LOCAL_SENDER_NAME} if email else {}),
            "DefaultPartnerName": default_partner,
            "DefaultProgramName": default_program,
            **(parameters or {}),
        }
        self.sender = resolved.get("SenderEmail", "")
        self.mail_dir = mail_dir if self.sender else None
        self.ses = LocalSes(max_send_rate=ses_rate, mail_dir=self.mail_dir)
        self.stack = MotoStack(
            template,
            parameters=resolved,
            secret_values={"CertiverseTokenSecret": certiverse_token},
        )
        self._certiverse_url = certiverse_url
        self._tuning = {**LOCAL_TUNING, **(tuning or {})}
        self._retry_visibility_s = retry_visibility_s
        self._log_stream = log_stream
        self.lambdas: LocalLambdas | None = None
        self._ledger: tuple[str, Ledger] | None = None  # (endpoint, ledger) once asked for
        self._copies: dict[str, tuple[Path, Path]] = {}  # batch -> its copies in out dirs
        self._shown: dict[str, str] = {}  # batch -> the progress line shown last
        self._retries_shown: set[tuple[str, int]] = set()  # (batch, delivery) said to retry
        self._asked: set[str] = set()  # batches whose approval hint was shown

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalPipeline:
        moto_fixes.apply()
        self.stack.start()
        _forget_process_caches()
        self.lambdas = LocalLambdas(
            self.stack,
            retry_visibility_s=self._retry_visibility_s,
            # The template insists on https for the real API; locally the sandbox is plain http.
            env_overrides={"CERTIVERSE_BASE_URL": self._certiverse_url, **self._tuning},
        )
        activate(self.ses)
        if self.sender:
            self.stack.client("sesv2").create_email_identity(EmailIdentity=self.sender)
        if "EmailEventsFunction" in self.lambdas.functions:
            # SES's events, as the configuration set's EventBridge destination delivers them.
            self.lambdas.add_feed("EmailEventsFunction", self.ses.drain, self.ses.pending)
        with self._logs_routed():
            for function_id in self.lambdas.functions:
                self.lambdas.load(function_id)  # cold starts, so their loggers exist now
        return self

    def stop(self) -> None:
        _forget_process_caches()
        activate(None)
        self.stack.stop()

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ accessors

    @property
    def bucket(self) -> str:
        return self.stack.resource("InboxBucket").ref

    @property
    def ledger(self) -> Ledger:
        """The stack's ledger; built once per running stack (a boto3 resource costs ~10 ms)."""
        endpoint = self.stack.endpoint_url
        if self._ledger is None or self._ledger[0] != endpoint:
            ledger = Ledger(
                self.stack.resource("LedgerTable").ref, dynamodb=_resource(self.stack, "dynamodb")
            )
            self._ledger = (endpoint, ledger)
        return self._ledger[1]

    def queue_url(self, logical_id: str) -> str:
        return self.stack.resource(logical_id).ref

    # ------------------------------------------------------------------ inputs

    def submit_csv(
        self, path: Path, *, key: str | None = None, metadata: dict[str, str] | None = None
    ) -> str:
        """Upload a CSV under incoming/ as a user would; return its batch id."""
        key = key or f"incoming/{path.name}"
        with path.open("rb") as body:
            put = self.stack.client("s3").put_object(
                Bucket=self.bucket, Key=key, Body=body, Metadata=metadata or {}
            )
        version = put.get("VersionId") or str(put.get("ETag", "")).strip('"')
        return csv_batch_id(self.bucket, key, version)

    def submit_request(self, request: dict[str, Any] | str) -> str | None:
        """Send an HR request on the request queue; return its batch id when it has one."""
        return self.send_request(request)[1]

    def send_request(self, request: dict[str, Any] | str) -> tuple[str, str | None]:
        """Send an HR request on the request queue: its message id, and its batch id when it
        names one (a refused request may name one and still start no batch)."""
        body = request if isinstance(request, str) else json.dumps(request)
        sent = self.stack.client("sqs").send_message(
            QueueUrl=self.queue_url("RequestQueue"), MessageBody=body
        )
        request_id = request.get("requestId") if isinstance(request, dict) else None
        batch_id = (
            request_batch_id(request_id, dry_run=request.get("dryRun") is True)
            if isinstance(request, dict) and isinstance(request_id, str) and request_id
            else None
        )
        return str(sent["MessageId"]), batch_id

    def refusal(self, message_id: str) -> dict[str, Any] | None:
        """The refusal the request handler wrote for message ``message_id``, if it refused it."""
        s3 = self.stack.client("s3")
        try:
            body = s3.get_object(Bucket=self.bucket, Key=refusal_key(message_id))["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        answer: dict[str, Any] = json.loads(body)
        return answer

    def wait_for_door(
        self, message_id: str, batch_id: str | None, *, timeout_s: float
    ) -> dict[str, Any] | None:
        """Deliver events until the request handler has taken message ``message_id`` in (its
        batch exists) or refused it (its refusal is written); the refusal, or None."""
        assert self.lambdas is not None, "start() first"
        answer: dict[str, Any] | None = None

        def decided() -> bool:
            nonlocal answer
            if batch_id is not None and self.ledger.batches.get_batch(batch_id) is not None:
                return True
            answer = self.refusal(message_id)
            return answer is not None

        with self._logs_routed():
            self.lambdas.run_until(decided, timeout_s)
        return answer

    # ------------------------------------------------------------------ running

    def progress(self, batch_id: str) -> Progress:
        batch = self.ledger.batches.get_batch(batch_id)
        if batch is None:
            return Progress()
        chunks = list(self.ledger.chunks.iter_chunks(batch_id))
        bought = [c for c in chunks if c.purchase_code]
        tally = tally_chunks(chunks)
        return Progress(
            status=_stage(batch, chunks),
            rows=batch.rows_total,
            rejected=batch.rows_rejected,
            existing=batch.rows_existing,
            failed=tally.failed + batch.rows_failed_early,
            chunks=batch.chunk_count if batch.chunk_count is not None else len(chunks),
            purchases=len(bought),
            vouchers_ready=sum(c.quantity for c in chunks if c.state == ChunkState.ASSIGNED),
            assigned=tally.assigned,
            emails=self.email_counts(batch_id) if self.mails(batch) else None,
        )

    # ------------------------------------------------------------------ e-mail

    def mails(self, batch: BatchRecord | None) -> bool:
        """Does this batch mail its codes here? (a sender, not a dry run, not opted out)"""
        return bool(self.sender) and batch is not None and not batch.dry_run and batch.send_email

    def email_counts(self, batch_id: str) -> dict[str, int]:
        return dict(Counter(d.state.value for d in self.ledger.deliveries.for_batch(batch_id)))

    def emails_settled(self, batch: BatchRecord) -> bool:
        """Every assigned row of a reported batch has an e-mail outcome (or is ``unknown``), and
        every SES event sent so far is recorded."""
        if not self.mails(batch):
            return True
        assert self.lambdas is not None
        if self.lambdas.feeds_pending():
            return False
        settled = sum(
            1 for d in self.ledger.deliveries.for_batch(batch.batch_id) if d.state in SETTLED
        )
        return settled >= batch.rows_assigned

    def refresh_results(self, batch_id: str) -> None:
        """Rewrite the batch's results with its final e-mail states now (through the report
        function, as the delayed refresh message would a second later)."""
        assert self.lambdas is not None
        body = json.dumps({"batchId": batch_id, "check": "emails"})
        queue = self.stack.resource("ReportQueue")
        event = {"Records": [sqs_record(
            {"MessageId": f"refresh-{batch_id}", "ReceiptHandle": "local", "Body": body,
             "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
             "MD5OfBody": ""},
            queue.get_att("Arn"), self.stack.region)]}  # fmt: skip
        with self._logs_routed():
            self.lambdas.invoke("ReportFunction", event)

    def run_until_done(
        self,
        batch_id: str,
        *,
        timeout_s: float = 600,
        show: TextIO | None = None,
        every_s: float = 1.0,
        stop_when_waiting: bool = False,
    ) -> BatchRecord:
        """Deliver events until the batch is DONE or FAILED (or, with ``stop_when_waiting``,
        awaits approval); show progress on ``show``."""
        assert self.lambdas is not None, "start() first"
        last_shown = 0.0

        def shown(line: str) -> None:
            nonlocal last_shown
            if line != self._shown.get(batch_id) and show is not None:
                print(line, file=show, flush=True)
                self._shown[batch_id], last_shown = line, time.monotonic()

        def finished() -> bool:
            batch = self.ledger.batches.get_batch(batch_id)
            done = batch is not None and batch.status in FINAL_STATUSES
            # A batch's callbacks go out after it ends: wait for them to be delivered or fail.
            done = done and not self.callbacks_pending(batch_id)
            # Its e-mails too: every assigned row's has an outcome (or is unknown).
            done = done and batch is not None and self.emails_settled(batch)
            if (
                not done
                and batch is not None
                and batch.status == BatchStatus.AWAITING_APPROVAL
                and batch_id not in self._asked
                and show is not None
            ):
                self._asked.add(batch_id)
                print(self._approval_hint(batch), file=show, flush=True)
            if show is not None and batch is not None and not done:
                self._show_preflight_retry(batch, show)
            if stop_when_waiting and batch is not None:
                done = done or batch.status == BatchStatus.AWAITING_APPROVAL
            if show is not None and not done and time.monotonic() - last_shown >= every_s:
                shown(self.progress(batch_id).line())
            return done

        with self._logs_routed():
            self.lambdas.run_until(finished, timeout_s)
        batch = self.ledger.batches.get_batch(batch_id)
        assert batch is not None
        if self.mails(batch) and batch.status == BatchStatus.DONE:
            self.refresh_results(batch_id)
        shown(self.progress(batch_id).line())  # the final state, once
        return batch

    def _show_preflight_retry(self, batch: BatchRecord, show: TextIO) -> None:
        """Once per delivery that met a Certiverse outage during pre-flight: when it retries."""
        if batch.status != BatchStatus.INGESTING or batch.preflight_attempt is None:
            return
        said = (batch.batch_id, batch.preflight_attempt)
        if said in self._retries_shown:
            return
        self._retries_shown.add(said)
        print(
            f"batch {batch.batch_id}: Certiverse unavailable, retrying in "
            f"{batch.preflight_retry_in} s (delivery {batch.preflight_attempt} met the outage; "
            "nothing bought yet)",
            file=show,
            flush=True,
        )

    def callbacks_pending(self, batch_id: str) -> bool:
        """Whether a callback of the batch still has attempts to make."""
        return any(
            d.state == DeliveryState.PENDING
            for d in self.ledger.outbox.callback_deliveries(batch_id)
        )

    def _approval_hint(self, batch: BatchRecord) -> str:
        where = argparse.Namespace(endpoint_url=self.stack.endpoint_url)
        approve = command_hint(where, "approve", batch.batch_id)
        reject = command_hint(where, "reject", batch.batch_id, "--reason", '"…"')
        return (
            f"[awaiting approval] batch {batch.batch_id}: {batch.approval_reason}. Nothing is "
            f"bought until it is decided; in another terminal:\n    {approve}\n    {reject}\n"
            "  (this run waits for the decision, or --timeout)"
        )

    def sync(self) -> dict[str, Any]:
        """Run the scheduled redemption sync once, now, as its EventBridge rule would."""
        assert self.lambdas is not None, "start() first"
        with self._logs_routed():
            result: dict[str, Any] = self.lambdas.run_scheduled("SyncFunction")
        return result

    def run_until_idle(self, *, timeout_s: float = 120) -> None:
        """Deliver events until every queue is empty (for inputs without a batch id)."""
        assert self.lambdas is not None, "start() first"
        with self._logs_routed():
            self.lambdas.run_until_idle(timeout_s)

    def decide(self, batch_id: str, decision: str, note: str | None = None) -> BatchRecord:
        """``approve`` / ``reject`` against this stack, as the commands do."""
        from voucher_distributor_cli.ops.approval import decide  # noqa: PLC0415
        from voucher_distributor_cli.ops.target import Target  # noqa: PLC0415

        return decide(Target.local(self.stack.endpoint_url), batch_id, decision=decision, note=note)

    # ------------------------------------------------------------------ outputs

    def result(self, batch_id: str, out_dir: Path | None = None) -> RunResult:
        """Read the batch's summary and results CSV; copy them to ``out_dir`` when given."""
        batch = self.ledger.batches.get_batch(batch_id)
        if batch is None:
            raise LocalRunError(f"no batch {batch_id}")
        s3 = self.stack.client("s3")
        summary_bytes = s3.get_object(Bucket=self.bucket, Key=batch.summary_key)["Body"].read()
        summary = json.loads(summary_bytes)
        csv_bytes: bytes | None = None
        if (summary.get("results") or {}).get("csv"):
            csv_bytes = s3.get_object(Bucket=self.bucket, Key=batch.results_csv_key)["Body"].read()
        results_path = summary_path = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            summary_path, results_path = self._copy_names(out_dir, batch)
            summary_path.write_bytes(summary_bytes)
            if csv_bytes is not None:
                results_path.write_bytes(csv_bytes)
            else:
                results_path = None
        rows = read_results(csv_bytes) if csv_bytes is not None else []
        deliveries_path = None
        if out_dir is not None and results_path is not None and "emails" in summary:
            key = deliveries_csv_key(batch.results_csv_key)
            with contextlib.suppress(s3.exceptions.NoSuchKey):
                body = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                deliveries_path = results_path.with_name(
                    results_path.name.removesuffix(".results.csv") + ".deliveries.csv"
                )
                deliveries_path.write_bytes(body)
        return RunResult(
            batch_id,
            summary,
            results_path,
            summary_path,
            rows,
            deliveries_csv=deliveries_path,
            mail_dir=self.mail_dir if "emails" in summary else None,
        )

    def _copy_names(self, out_dir: Path, batch: BatchRecord) -> tuple[Path, Path]:
        """Where a batch's summary and results go in ``out_dir``: the same batch always to the
        same files, and never over another batch's copies from this run (two inputs may share
        a name): ``people.results.csv``, then ``people-2.results.csv``, …"""
        known = self._copies.get(batch.batch_id)
        if known is not None:
            return known
        # The copies keep the readable name; the short batch id the S3 keys carry is left out.
        tag = f".{short_batch_id(batch.batch_id)}"
        summary_name = Path(batch.summary_key).name.replace(tag, "", 1)
        results_name = Path(batch.results_csv_key).name.replace(tag, "", 1)
        stem = results_name.removesuffix(".results.csv")
        taken = {p for pair in self._copies.values() for p in pair}
        number = 1
        while True:
            suffix = "" if number == 1 else f"-{number}"
            pair = (
                out_dir / summary_name.replace(stem, stem + suffix, 1),
                out_dir / f"{stem}{suffix}.results.csv",
            )
            if not taken & set(pair):
                self._copies[batch.batch_id] = pair
                return pair
            number += 1

    # ------------------------------------------------------------------ operating

    def retry_failed(self, batch_id: str) -> str:
        """``voucher-distributor retry-failed`` on this stack: the retry batch's id."""
        from voucher_distributor_cli.ops.retry import retry_failed  # noqa: PLC0415

        started = retry_failed(self.ledger, self.stack.client("s3"), self.bucket, batch_id)
        return started.batch_id

    def set_certiverse_url(self, url: str) -> None:
        """Point the functions at another Certiverse URL (as a redeploy with a fixed
        ``CertiverseBaseUrl`` would); their settings are read again on the next invocation."""
        assert self.lambdas is not None, "start() first"
        self.lambdas.env_overrides["CERTIVERSE_BASE_URL"] = url
        _forget_process_caches()

    # ------------------------------------------------------------------ logs

    def logs_routed(self) -> contextlib.AbstractContextManager[None]:
        """The functions' logs to the log stream while this block runs (see below)."""
        return self._logs_routed()

    @contextlib.contextmanager
    def _logs_routed(self) -> Iterator[None]:
        """Send the handlers' structured logs and metrics to the log stream, not the terminal.

        Powertools binds its logger to the stdout of the moment it is created, which may be
        during this block (a cold start): so afterwards every handler pointing at the log
        stream is pointed back at the terminal, whether it existed before or not.
        """
        if self._log_stream is None:
            yield
            return
        terminal = sys.stdout
        for handler in _pipeline_log_handlers():
            if handler.stream is terminal or getattr(handler.stream, "closed", False):
                _point(handler, self._log_stream)
        try:
            with contextlib.redirect_stdout(self._log_stream):
                yield
        finally:
            for handler in _pipeline_log_handlers():
                if handler.stream is self._log_stream:
                    _point(handler, terminal)


def _stage(batch: BatchRecord, chunks: list[Any]) -> str:
    """The batch's state as a person follows it: once planned, ``buying`` while purchases are
    outstanding and ``assigning`` until every chunk ended (never ``planned`` beside codes)."""
    if batch.status != BatchStatus.PLANNED or not chunks:
        return batch.status.value.lower()
    if any(not c.purchase_code and c.state != ChunkState.FAILED for c in chunks):
        return "buying" if any(c.purchase_code for c in chunks) else "planned"
    return "assigning"


def _pipeline_log_handlers() -> list[logging.StreamHandler[Any]]:
    return [
        handler
        for name in ("voucher-distributor", "voucher_distributor")
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]


def _point(handler: logging.StreamHandler[Any], stream: IO[str]) -> None:
    if getattr(handler.stream, "closed", False):
        handler.stream = stream  # setStream would flush the closed one first
    else:
        handler.setStream(stream)


def _resource(stack: MotoStack, service: str) -> Any:
    import boto3  # noqa: PLC0415 - only the local tools need a resource interface

    return boto3.resource(
        service,
        endpoint_url=stack.endpoint_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
    )


def _forget_process_caches() -> None:
    """Each local stack has its own moto endpoint: drop clients cached by an earlier one."""
    from aws_lambda_powertools.utilities.parameters.constants import (  # noqa: PLC0415
        DEFAULT_PROVIDERS,
    )

    from voucher_distributor.settings import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    DEFAULT_PROVIDERS.clear()
    runtime = sys.modules.get("voucher_distributor.runtime")
    if runtime is not None:
        runtime.services.cache_clear()


# ---------------------------------------------------------------------- the `local run` command


def run_files(
    paths: list[Path],
    *,
    partner: str | None,
    program: str | None,
    certiverse_url: str | None,
    out_dir: Path,
    timeout_s: float,
    show: TextIO,
    together: bool = False,
    seed: int | None = None,
    dry_run: bool = False,
    parameters: dict[str, str] | None = None,
    state: Path | None = None,
    send_email: bool = True,
    send_at: str | None = None,
) -> list[RunResult]:
    """Run CSVs (and HR request JSONs) through one local pipeline, end to end.

    In order, each input to its end before the next is sent; with ``together`` all are sent
    at once and run side by side (two lists of the same people arriving in the same second).
    One result per input, in input order, each with its own copies in ``out_dir``. The
    built-in sandbox draws its codes afresh each run unless ``seed`` is given.

    Each run is a new stack, unless ``state`` names a directory: the ledger, the bucket and
    the sandbox's sales of the run before are loaded from it at the start and written to it
    at the end (``local/state.py``), so a person sent again is ``existing``.
    The stack mails each assigned code from a local sender (every message under
    ``out_dir/mail/``) unless ``parameters`` set ``SenderEmail`` (empty: no e-mail);
    ``send_email=False`` makes each input opt out instead (``--no-email``); ``send_at`` (ISO
    8601 with an offset) makes each input's e-mails wait until then (``--send-at``).
    """
    from voucher_distributor_cli.local import state as kept  # noqa: PLC0415

    for path in paths:
        if not path.is_file():
            raise LocalRunError(f"{path}: no such file")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "local-run.log"
    with contextlib.ExitStack() as stack:
        sandbox: SandboxServer | None = None
        if certiverse_url is None:
            data = kept.sandbox_data(state) if state is not None else None
            sandbox = SandboxServer(
                SandboxConfig(
                    token=SANDBOX_TOKEN, generation_delay_s=2.0, seed=seed, data_path=data
                ),
                host="127.0.0.1",
                port=0,
            )
            stack.enter_context(sandbox)
            url, token = sandbox.base_url, SANDBOX_TOKEN
            print(f"Certiverse sandbox on {url}", file=show)
        else:
            url, token = certiverse_url, os.environ.get("CERTIVERSE_TOKEN", "")
            if not token:
                raise LocalRunError("--certiverse-url needs the API token in CERTIVERSE_TOKEN")
        log_file = stack.enter_context(log_path.open("w", encoding="utf-8"))
        pipeline = stack.enter_context(
            LocalPipeline(
                certiverse_url=url,
                certiverse_token=token,
                default_partner=partner or "",
                default_program=program or "",
                log_stream=log_file,
                parameters=parameters,
                email=True,
                mail_dir=out_dir / "mail",
            )
        )
        print(
            f"AWS emulation (moto) on {pipeline.stack.endpoint_url}; logs in {log_path}", file=show
        )
        if state is not None:
            loaded = kept.restore(state, pipeline.stack)
            print(
                f"state {state}: {loaded['ledgerItems']:,} ledger items and "
                f"{loaded['objects']:,} objects of earlier runs loaded",
                file=show,
            )
        results = _run_inputs(
            pipeline, paths, partner, program, show, out_dir, timeout_s,
            together=together, dry_run=dry_run, send_email=send_email, send_at=send_at,
        )  # fmt: skip
        if state is not None:
            kept.save(state, pipeline.stack, sandbox)
        return results


def _run_inputs(
    pipeline: LocalPipeline,
    paths: list[Path],
    partner: str | None,
    program: str | None,
    show: TextIO,
    out_dir: Path,
    timeout_s: float,
    *,
    together: bool,
    dry_run: bool,
    send_email: bool = True,
    send_at: str | None = None,
) -> list[RunResult]:
    keys = _upload_keys(paths, together=together)
    if not together:
        # Each result is read as soon as its batch ends: a later upload of the same name
        # writes its results under the same key.
        results = []
        for path, key in zip(paths, keys, strict=True):
            sent = _submit(
                pipeline, path, key, partner, program, show, dry_run=dry_run,
                send_email=send_email, send_at=send_at,
            )  # fmt: skip
            _at_the_door(pipeline, sent, show, timeout_s)
            results.append(_finish(pipeline, sent, out_dir, show, timeout_s))
        return results
    sent_all = [
        _submit(
            pipeline,
            path,
            key,
            partner,
            program,
            show,
            dry_run=dry_run,
            send_email=send_email,
            send_at=send_at,
        )
        for path, key in zip(paths, keys, strict=True)
    ]
    for sent in sent_all:
        _at_the_door(pipeline, sent, show, timeout_s)
    for sent in sent_all:
        if sent.refusal is None and sent.batch_id:
            pipeline.run_until_done(sent.batch_id, timeout_s=timeout_s, show=show)
    return [_finish(pipeline, sent, out_dir, show, timeout_s) for sent in sent_all]


@dataclass
class _Sent:
    """An input handed to the local stack: its batch, or the refusal that ended it at the door."""

    path: Path
    batch_id: str
    message_id: str | None = None  # a request's, until it is taken in or refused
    refusal: dict[str, Any] | None = None


def _finish(
    pipeline: LocalPipeline, sent: _Sent, out_dir: Path, show: TextIO, timeout_s: float
) -> RunResult:
    if sent.refusal is not None:
        copy = _copy_refusal(out_dir, sent.path, sent.refusal)
        return RunResult(
            sent.batch_id, sent.refusal, None, None, input=sent.path, refusal_copy=copy
        )
    pipeline.run_until_done(sent.batch_id, timeout_s=timeout_s, show=show)
    result = pipeline.result(sent.batch_id, out_dir)
    result.input = sent.path
    return result


def _copy_refusal(out_dir: Path, path: Path, refusal: dict[str, Any]) -> Path:
    """``<name>.error.json`` in ``out_dir`` (``<name>-2.error.json`` when that is taken)."""
    number = 1
    while True:
        copy = out_dir / f"{path.stem}{'' if number == 1 else f'-{number}'}.error.json"
        if not copy.exists() or json.loads(copy.read_text(encoding="utf-8")) == refusal:
            break
        number += 1
    copy.write_text(json.dumps(refusal, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return copy


def run_file(path: Path, **kwargs: Any) -> RunResult:
    """``run_files`` for one input."""
    (result,) = run_files([path], **kwargs)
    return result


def _upload_keys(paths: list[Path], *, together: bool) -> list[str | None]:
    """The incoming/ key of each CSV (None for a request). Run in order, a name seen before is
    uploaded again under the same key (a new version, as a user re-uploading would); sent
    together, a repeated name gets a folder of its own so their results never share a key."""
    keys: list[str | None] = []
    seen: Counter[str] = Counter()
    for path in paths:
        if path.suffix.lower() == ".json":
            keys.append(None)
            continue
        seen[path.name] += 1
        folder = f"{seen[path.name]}/" if together and seen[path.name] > 1 else ""
        keys.append(f"incoming/{folder}{path.name}")
    return keys


def _submit(
    pipeline: LocalPipeline,
    path: Path,
    key: str | None,
    partner: str | None,
    program: str | None,
    show: TextIO,
    *,
    dry_run: bool = False,
    send_email: bool = True,
    send_at: str | None = None,
) -> _Sent:
    """Upload a CSV, or send a request (as it is, when it is not even JSON: the request
    handler answers it as the deployed one would). A dry run is asked for as a user would:
    object metadata ``mode: dry-run``, or ``"dryRun": true`` in the request."""
    if key is not None:
        metadata = {
            **({"mode": "dry-run"} if dry_run else {}),
            **({} if send_email else {"send-email": "false"}),
            **({"send-at": send_at} if send_at else {}),
        }
        batch_id = pipeline.submit_csv(path, key=key, metadata=metadata)
        mode = " as a dry run" if dry_run else ""
        print(f"uploaded {path.name} to s3://{pipeline.bucket}/{key}{mode}", file=show)
        return _Sent(path, batch_id)
    body = path.read_text(encoding="utf-8-sig", errors="replace")
    request: dict[str, Any] | str = body
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        # Sent as it is: the request handler answers it as the deployed one would.
        print(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", file=show
        )
    else:
        if isinstance(parsed, dict):
            if partner and not parsed.get("partnerName"):
                parsed["partnerName"] = partner
            if program and not parsed.get("programName"):
                parsed["programName"] = program
            if dry_run:
                parsed["dryRun"] = True
            if not send_email:
                parsed["sendEmail"] = False
            if send_at:
                parsed["sendAt"] = send_at
            request = parsed
    message_id, request_batch = pipeline.send_request(request)
    print(f"request {path.name} sent to the request queue", file=show)
    return _Sent(path, request_batch or "", message_id)


def _at_the_door(pipeline: LocalPipeline, sent: _Sent, show: TextIO, timeout_s: float) -> None:
    """Wait for the request handler to take a request in or refuse it (well under a second):
    a refused request never becomes a batch to wait for."""
    if sent.message_id is None:
        return
    sent.refusal = pipeline.wait_for_door(
        sent.message_id, sent.batch_id or None, timeout_s=timeout_s
    )
    if sent.refusal is not None:
        problems = sent.refusal.get("problems", [])
        print(
            f"{sent.path}: refused, nothing was bought "
            f"({len(problems)} problem{'' if len(problems) == 1 else 's'})",
            file=show,
        )


def summarise_rows(rows: list[dict[str, str]]) -> Counter[str]:
    """Counts of the results CSV by status (what a user would tally in a spreadsheet)."""
    return Counter(row.get("status", "") for row in rows)
