"""End-to-end fixtures: the whole pipeline through the local runner, Certiverse as the sandbox."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

TOKEN = "e2e-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"
CLOUD = "Cloud Fundamentals Exam Vouchers"


@dataclass
class World:
    sandbox: SandboxServer
    pipeline: LocalPipeline
    tmp: Path

    def listen_to_events(self) -> str:
        """A queue that receives every event the stack publishes (an EventBridge rule)."""
        sqs, events = self.pipeline.stack.client("sqs"), self.pipeline.stack.client("events")
        queue = sqs.create_queue(QueueName="event-listener")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name="all", EventPattern=json.dumps({"source": ["voucher-distributor"]}))
        events.put_targets(Rule="all", Targets=[{"Id": "listener", "Arn": arn}])
        return queue

    def events_heard(self, queue: str) -> list[dict[str, Any]]:
        """Every event the listener queue holds now (taken off it)."""
        sqs = self.pipeline.stack.client("sqs")
        got: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            got.extend(json.loads(m["Body"]) for m in messages)
            for m in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return got

    def refused_at_the_door(self, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` sent as an HR request, which the request handler refuses: its refusal."""
        message_id, batch_id = self.pipeline.send_request(request)
        refusal = self.pipeline.wait_for_door(message_id, batch_id, timeout_s=30)
        assert refusal is not None, "the request was taken in"
        return refusal

    def csv_file(self, rows: list[dict[str, str]], name: str = "people.csv") -> Path:
        path = self.tmp / name
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return path


def people(count: int, program: str = SPRING, *, start: int = 1, domain: str = "acme.example"):
    return [
        {"email": f"person{n}@{domain}", "first_name": f"First{n}", "last_name": f"Last{n}",
         "external_id": f"E{n:05d}", "program_name": program}
        for n in range(start, start + count)
    ]  # fmt: skip


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    started: list[object] = []

    def make(
        *,
        sandbox_token: str = TOKEN,
        pipeline_token: str = TOKEN,
        generation_delay_s: float = 0.3,
        page_size: int = 100,
        tuning: dict[str, str] | None = None,
        default_program: str = "",
        parameters: dict[str, str] | None = None,
        email: bool = False,
        ses_rate: float = 500.0,
    ) -> World:
        log = (tmp_path / "handlers.log").open("a", encoding="utf-8")
        started.append(log)
        sandbox = SandboxServer(
            SandboxConfig(
                token=sandbox_token,
                generation_delay_s=generation_delay_s,
                page_size=page_size,
                seed=11,
            ),
            host="127.0.0.1",
            port=0,
        ).start()
        started.append(sandbox)
        pipeline = LocalPipeline(
            certiverse_url=sandbox.base_url,
            certiverse_token=pipeline_token,
            default_partner=PARTNER,
            default_program=default_program,
            log_stream=log,
            # A pre-flight outage: the input is read again after a second (tests' timing).
            tuning={"INITIAL_CHECK_SECONDS": "0.5", "INGEST_RETRY_DELAYS": "1", **(tuning or {})},
            parameters=parameters,
            email=email,
            mail_dir=tmp_path / "mail",
            ses_rate=ses_rate,
        ).start()
        started.append(pipeline)
        return World(sandbox, pipeline, tmp_path)

    yield make
    for thing in reversed(started):
        if isinstance(thing, io.TextIOBase):
            thing.close()
        else:
            thing.stop()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ a webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """An integrator's webhook receiver: answers ``down_for`` requests with 503, then 200
    (``down_for=None``: always 503, until :meth:`heal`)."""

    down_for: int | None = 0
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def heal(self) -> None:
        with self.lock:
            self.down_for = 0

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            down = self.down_for is None or len(self.got) < self.down_for
            status = 503 if down else 200
            self.got.append(Received(headers, body, status))
            return status

    def accepted_once_per_id(self) -> dict[str, list[bytes]]:
        """What a deduplicating receiver keeps: the first accepted body per webhook-id."""
        kept: dict[str, list[bytes]] = defaultdict(list)
        for r in self.got:
            if r.answered == 200 and r.headers["webhook-id"] not in kept:
                kept[r.headers["webhook-id"]].append(r.body)
        return kept


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}/hooks/vouchers?token=s3cr3t-q"
    finally:
        server.shutdown()
        server.server_close()
