"""A purchase stage to drive step by step: the use cases against the template's stack in moto and
the Certiverse sandbox over loopback HTTP, so a test can run two workers' steps in the order it
chooses (an interleaving forced, not hoped for)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from voucher_distributor.adapters.certiverse import CertiverseClient, EnvToken, RetryPolicy
from voucher_distributor.adapters.events import Events
from voucher_distributor.adapters.ledger import Ledger
from voucher_distributor.adapters.queues import Queues
from voucher_distributor.adapters.storage import Storage
from voucher_distributor.models.ledger import BatchRecord, ChunkRecord, RecipientRecord
from voucher_distributor.pipeline.context import Services
from voucher_distributor_cli.local.runner import MotoStack
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

from .moto_stack import TEMPLATE, boto_kwargs, stack_ledger, stack_settings

TOKEN = "rig-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"


@dataclass
class Rig:
    stack: MotoStack
    sandbox: SandboxServer
    services: Services

    @property
    def ledger(self) -> Ledger:
        return self.services.ledger

    def with_settings(self, clock: Any = None, **changes: Any) -> Services:
        """The same adapters under other settings (another stack, a tighter timing), and
        another clock if given."""
        settings = self.services.settings.model_copy(update=changes)
        extra = {"clock": clock} if clock is not None else {}
        return Services(**{**self.services.__dict__, "settings": settings, **extra})

    def add_batch(self, batch_id: str, people: int, *, notes: str = "") -> ChunkRecord:
        """A batch of one chunk of ``people`` recipients, planned and waiting to be bought."""
        self.ledger.batches.create_batch(
            BatchRecord(
                batch_id=batch_id, kind="csv", source=f"s3://b/incoming/{batch_id}.csv",
                results_csv_key=f"results/{batch_id}.results.csv",
                summary_key=f"results/{batch_id}.summary.json", created_at=1_000, notes=notes,
                chunk_count=1,
            )
        )  # fmt: skip
        rows_key = f"work/{batch_id}/chunks/00000.jsonl"
        self.services.storage.put_records(
            rows_key,
            [
                RecipientRecord(row_number=n, email=f"p{n}@acme.example")
                for n in range(1, people + 1)
            ],
        )
        chunk = ChunkRecord(
            batch_id=batch_id, chunk_no=0, partner_name=PARTNER, program_name=SPRING,
            quantity=people, rows_key=rows_key,
        )  # fmt: skip
        assert self.ledger.chunks.put_chunk_if_absent(chunk)
        return chunk

    def visible(self, logical_id: str) -> list[dict[str, Any]]:
        """Every message a queue holds now, delayed ones included once due (taken off it)."""
        import json
        import time

        sqs = self.stack.client("sqs")
        url = self.stack.resource(logical_id).ref
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            got += [json.loads(m["Body"]) for m in batch]
            for m in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if not batch:
                if self.stack.queue_counts(url).total == 0:
                    break
                time.sleep(0.2)
        return got


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    with make_rig(SandboxConfig(token=TOKEN, generation_delay_s=0, page_size=100, seed=7)) as r:
        yield r


@contextlib.contextmanager
def make_rig(config: SandboxConfig, **settings_changes: Any) -> Iterator[Rig]:
    """The rig with a sandbox of ``config`` (CERTIVERSE_TOKEN must be its token)."""
    with MotoStack(TEMPLATE) as stack, SandboxServer(config, host="127.0.0.1", port=0) as sandbox:
        kwargs = boto_kwargs(stack)
        settings = stack_settings(
            stack,
            certiverse_base_url=sandbox.base_url,
            initial_check_seconds=0,
            poll_base_delay_seconds=0,
            **settings_changes,
        )
        services = Services(
            settings=settings,
            ledger=stack_ledger(stack),
            storage=Storage(settings.inbox_bucket, s3=boto3.client("s3", **kwargs)),
            queues=Queues(sqs=boto3.client("sqs", **kwargs)),
            events=Events(events=boto3.client("events", **kwargs)),
            # A short retry budget: a Certiverse that keeps failing shows in seconds.
            certiverse=CertiverseClient(
                sandbox.base_url, EnvToken(), retry=RetryPolicy(max_attempts=2, total_budget_s=2)
            ),
        )
        yield Rig(stack, sandbox, services)
