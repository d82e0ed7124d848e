"""The ops commands (status, find, redrive, reconcile) against the local runner's stack."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.local_stack import run_csv, sandboxed_pipeline
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.main import main
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

TOKEN = "ops-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"

PEOPLE = (
    "email,first_name,program_name\r\n"
    + "".join(f"Person{n}@Acme.example,P{n},{SPRING}\r\n" for n in range(1, 6))
    + f"broken,Nope,{SPRING}\r\n"
)


@dataclass
class Ran:
    pipeline: LocalPipeline
    sandbox: SandboxServer
    batch_id: str

    @property
    def where(self) -> list[str]:
        return ["--endpoint-url", self.pipeline.stack.endpoint_url]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    tmp = tmp_path_factory.mktemp("ops")
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2, seed=3)
    tuning = {"INITIAL_CHECK_SECONDS": "2"}
    with sandboxed_pipeline(tmp, config, PARTNER, tuning=tuning) as (sandbox, pipeline):
        batch_id = run_csv(pipeline, tmp / "people.csv", PEOPLE)
        yield Ran(pipeline, sandbox, batch_id)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


def test_status_shows_chunks_counts_and_ages(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["status", ran.batch_id, *ran.where, "--json"], capsys)
    assert code == 0
    view = json.loads(out)
    assert view["status"] == "DONE"
    assert view["counts"]["assigned"] == 5
    assert view["counts"]["rejected"] == 1
    assert view["chunkStates"] == {"ASSIGNED": 1}
    (chunk,) = view["chunks"]
    assert chunk["quantity"] == 5
    assert chunk["purchaseCode"]
    assert view["ageSeconds"] >= 0

    code, text = _run(["status", ran.batch_id, *ran.where], capsys)
    assert code == 0
    assert "5 assigned, 0 existing, 1 rejected, 0 failed" in text
    assert view["counts"]["existing"] == 0  # issue 25 (12): the existing count is shown
    assert chunk["purchaseCode"] in text


def test_stack_options_work_before_or_after_the_command(
    ran: Ran, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = ["--stack", "voucher-distributor-local", "--region", "us-east-1"]
    for args in (
        [*ran.where, *stack, "status", ran.batch_id, "--json"],  # before: once, at the top
        [*ran.where, "status", ran.batch_id, *stack, "--json"],  # split around the command
    ):
        code, out = _run(args, capsys)
        assert code == 0, args
        assert json.loads(out)["batchId"] == ran.batch_id
    # After the command wins over before it: the wrong stack name fails clearly.
    args = ["--stack", "voucher-distributor-local", "status", ran.batch_id, *ran.where]
    assert main([*args, "--stack", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_command_without_a_stack_says_what_to_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "f-1"]) == 2
    assert "--stack NAME" in capsys.readouterr().err


def test_help_groups_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    operate, local, sandbox = (
        out.index("operate a deployed or local stack:"),
        out.index("run the pipeline locally:"),
        out.index("Certiverse sandbox:"),
    )
    assert operate < out.index("  reconcile") < local < out.index("  local run") < sandbox
    for option in ("--stack", "--endpoint-url", "--region", "--profile"):
        assert option in out


def test_status_of_an_unknown_batch_is_a_clear_error(
    ran: Ran, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "f-nope", *ran.where]) == 2
    assert "no batch f-nope" in capsys.readouterr().err


def test_find_lists_every_voucher_a_person_got(
    ran: Ran, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(["find", "person3@acme.example", *ran.where, "--json"], capsys)
    assert code == 0
    (found,) = json.loads(out)
    assert found["batchId"] == ran.batch_id
    assert found["status"] == "assigned"
    assert found["voucherCode"]
    assert found["program"] == SPRING

    code, out = _run(["find", "nobody@acme.example", *ran.where], capsys)
    assert code == 1
    assert "no voucher recorded" in out


def test_redrive_dry_run_then_move(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    sqs = ran.pipeline.stack.client("sqs")
    dlq = ran.pipeline.queue_url("ReportDeadLetterQueue")
    source = ran.pipeline.queue_url("ReportQueue")
    for n in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"batchId": f"stuck-{n}"}))

    code, out = _run(["redrive", *ran.where, "--queue", "ReportQueue", "--dry-run"], capsys)
    assert code == 0
    assert "ReportDeadLetterQueue -> ReportQueue: would move 3 message(s)" in out
    assert ran.pipeline.stack.queue_counts(dlq).visible == 3  # a dry run moves nothing

    code, out = _run(["redrive", *ran.where, "--json"], capsys)
    assert code == 0
    moved = {r["deadLetterQueue"]: r["moved"] for r in json.loads(out)}
    assert moved["ReportDeadLetterQueue"] == 3
    assert set(moved) == {
        "UploadDeadLetterQueue",
        "RequestDeadLetterQueue",
        "PurchaseDeadLetterQueue",
        "PollDeadLetterQueue",
        "ReportDeadLetterQueue",
        "CallbackDeadLetterQueue",
        "EmailDeadLetterQueue",  # a redriven e-mail message sends nothing twice
        "TemplateDeadLetterQueue",  # a template upload checked again changes nothing twice
    }
    assert ran.pipeline.stack.queue_counts(dlq).total == 0
    bodies = sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10)["Messages"]
    assert sorted(json.loads(m["Body"])["batchId"] for m in bodies) == [
        "stuck-0",
        "stuck-1",
        "stuck-2",
    ]
    for message in bodies:
        sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])


def test_redrive_names_unknown_queues(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redrive", *ran.where, "--queue", "Nope"]) == 2
    assert "no dead-letter queue 'Nope'" in capsys.readouterr().err


def _reconcile(ran: Ran, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code, out = _run(
        ["reconcile", *ran.where, "--certiverse-url", ran.sandbox.base_url, "--json"], capsys
    )
    return code, json.loads(out)


def test_reconcile_agrees_then_reports_a_purchase_we_do_not_know_and_a_mismatch(
    ran: Ran, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    code, report = _reconcile(ran, capsys)
    assert code == 0, report
    assert report["clean"] is True
    assert report["chunks"] == 1

    # A second purchase carrying chunk 0's marker: what a duplicate buy would leave behind.
    duplicate = httpx.post(
        f"{ran.sandbox.base_url}/vouchers/purchases",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "notes": f"by hand {_our_marker(ran, 0)}",
            "partnerName": PARTNER,
            "programName": SPRING,
            "quantity": 2,
        },
        timeout=10,
    ).json()
    # The ledger's chunk says 4 where Certiverse sold 5.
    with _first_chunk_changed(ran, "quantity", {"N": "4"}):
        code, report = _reconcile(ran, capsys)
    assert code == 1
    assert report["clean"] is False
    (unknown,) = report["unknownPurchases"]  # type: ignore[misc]
    assert unknown["purchaseCode"] == duplicate["voucherPurchaseCode"]
    assert unknown["chunk"] == 0
    whats = {m["what"] for m in report["countMismatches"]}  # type: ignore[attr-defined]
    assert {"purchase quantity", "vouchers listed", "rows assigned"} == whats
    assert report["chunksWithoutPurchase"] == []


def test_reconcile_reports_a_chunk_whose_purchase_certiverse_lacks(
    ran: Ran, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    with _first_chunk_changed(ran, "purchase_code", {"S": "VP-NOSUCH"}):
        code, out = _run(
            ["reconcile", *ran.where, "--certiverse-url", ran.sandbox.base_url], capsys
        )
    assert code == 1
    assert "chunks without a purchase: 1" in out
    assert "VP-NOSUCH" in out


@contextlib.contextmanager
def _first_chunk_changed(ran: Ran, attribute: str, value: dict[str, str]) -> Iterator[None]:
    """Chunk 0's ``attribute`` in the ledger is ``value`` (a DynamoDB attribute value) for the
    block, and what it was again after it."""
    ledger = ran.pipeline.stack.client("dynamodb")
    table = ran.pipeline.stack.resource("LedgerTable").ref
    key = {"pk": {"S": f"B#{ran.batch_id}"}, "sk": {"S": "C#00000"}}
    original = ledger.get_item(TableName=table, Key=key)["Item"][attribute]

    def put(new: dict[str, str]) -> None:
        ledger.update_item(
            TableName=table,
            Key=key,
            UpdateExpression=f"SET {attribute} = :v",
            ExpressionAttributeValues={":v": new},
        )

    put(value)
    try:
        yield
    finally:
        put(original)


def _our_marker(ran: Any, chunk_no: int) -> str:
    """The marker the local stack's purchase function appends for this chunk."""
    from voucher_distributor.domain.batches import chunk_marker, stack_tag

    assert ran.pipeline.lambdas is not None
    stack_id = ran.pipeline.lambdas.environment("PurchaseFunction")["STACK_ID"]
    return chunk_marker(ran.batch_id, chunk_no, stack_tag(stack_id))
