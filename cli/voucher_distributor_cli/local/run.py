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
import sys
import time
from collections import Counter
from collections.abc import Iterator
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
from voucher_distributor_cli.local.defaults import (
    DEFAULT_TEMPLATE,
    LOCAL_PARAMETERS,
    LOCAL_SENDER,
    LOCAL_SENDER_NAME,
    LOCAL_SES_RATE,
    LOCAL_TUNING,
)
from voucher_distributor_cli.local.results import Progress, RunResult
from voucher_distributor_cli.local.runner import LocalLambdas, MotoStack, moto_fixes, sqs_record
from voucher_distributor_cli.local.runner.local_ses import LocalSes, activate

FINAL_STATUSES = frozenset({BatchStatus.DONE, BatchStatus.FAILED})


class LocalRunError(RuntimeError):
    """The local run could not complete (a timeout, or an unreadable input)."""


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
        return dict(Counter(state.value for _, state in self.ledger.deliveries.states(batch_id)))

    def emails_settled(self, batch: BatchRecord) -> bool:
        """Every assigned row of a reported batch has an e-mail outcome (or is ``unknown``), and
        every SES event sent so far is recorded."""
        if not self.mails(batch):
            return True
        assert self.lambdas is not None
        if self.lambdas.feeds_pending():
            return False
        settled = sum(
            1 for _, state in self.ledger.deliveries.states(batch.batch_id) if state in SETTLED
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
    templates = sys.modules.get("voucher_distributor.pipeline.templates")
    if templates is not None:  # accepted e-mail templates, cached per warm container
        templates.forget_templates()
    runtime = sys.modules.get("voucher_distributor.runtime")
    if runtime is not None:
        runtime.services.cache_clear()
