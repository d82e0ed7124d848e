"""After the hand-out, through the CLI against the local stack: ``sync``, ``voucher``, ``find``,
``redemptions`` and ``reconcile``'s e-mail mismatches; the sandbox over HTTP plays Certiverse."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.local_stack import run_csv, sandboxed_pipeline
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.main import main
from voucher_distributor_cli.sandbox import SandboxConfig, SandboxServer

TOKEN = "redemption-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"

PEOPLE = "email,program_name\r\n" + "".join(
    f"person{n}@acme.example,{SPRING}\r\n" for n in range(1, 7)
)


@dataclass
class Handed:
    pipeline: LocalPipeline
    sandbox: SandboxServer
    batch_id: str
    codes: dict[str, str]  # e-mail -> code

    @property
    def where(self) -> list[str]:
        return ["--endpoint-url", self.pipeline.stack.endpoint_url]

    @property
    def certiverse(self) -> list[str]:
        return ["--certiverse-url", self.sandbox.base_url]


@pytest.fixture(scope="module")
def handed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Handed]:
    tmp = tmp_path_factory.mktemp("redemption")
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2, page_size=4, seed=5)
    tuning = {"INITIAL_CHECK_SECONDS": "2"}
    with sandboxed_pipeline(tmp, config, PARTNER, tuning=tuning) as (sandbox, pipeline):
        batch_id = run_csv(pipeline, tmp / "people.csv", PEOPLE)
        codes = {
            a.email: a.voucher_code
            for a in pipeline.ledger.assignments.iter_assignments(batch_id)
            if a.status == "assigned"
        }
        sandbox.update_vouchers(
            [codes["person1@acme.example"]],
            {"isUsed": True, "usedBy": {"usedDateUtc": "2026-12-02T08:00:00Z"}},
        )
        sandbox.update_vouchers(
            [codes["person2@acme.example"]],
            {"reservationCode": "RES-9", "reservationStatus": "Scheduled"},
        )
        sandbox.update_vouchers(
            [codes["person3@acme.example"]], {"recipientEmail": "intruder@acme.example"}
        )
        yield Handed(pipeline, sandbox, batch_id, codes)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def synced(handed: Handed) -> dict[str, object]:
    """``voucher-distributor sync`` once, with the token from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CERTIVERSE_TOKEN", TOKEN)
        capture = io.StringIO()
        patch.setattr("sys.stdout", capture)
        code = main(["sync", *handed.where, *handed.certiverse, "--json"])
    assert code == 0
    document: dict[str, object] = json.loads(capture.getvalue())
    return document


def test_sync_runs_once_now_against_the_local_stack(handed: Handed, synced: dict) -> None:
    assert synced["purchasesRead"] == 1
    assert synced["codesChanged"] == 6
    assert synced["emailMismatches"] == 1
    assert synced["batchesReported"] == [handed.batch_id]
    assert synced["byProgram"] == {
        f"{PARTNER} / {SPRING}": {"unused": 4, "reserved": 1, "used": 1, "expired": 0,
                                  "inactive": 0},
    }  # fmt: skip


def test_voucher_shows_one_codes_record(
    handed: Handed, synced: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code = handed.codes["person1@acme.example"]
    status, out = _run(["voucher", code, *handed.where, "--json"], capsys)
    assert status == 0
    record = json.loads(out)
    assert record["holder"] == "person1@acme.example"
    assert (record["partner"], record["program"]) == (PARTNER, SPRING)
    assert record["batchId"] == handed.batch_id
    assert record["channel"] == "csv"
    assert record["assignedAt"]
    assert record["state"] == "used"
    assert record["usedAt"] == "2026-12-02T08:00:00Z"
    assert record["active"] is True
    assert record["expiresUtc"]
    assert record["reissueHistory"] == []

    status, text = _run(["voucher", handed.codes["person2@acme.example"], *handed.where], capsys)
    assert status == 0
    assert "state     reserved" in text
    assert "RES-9 (Scheduled)" in text

    status, text = _run(["voucher", "NOPE-NOT-A-CODE", *handed.where], capsys)
    assert status == 1
    assert "no voucher NOPE-NOT-A-CODE" in text


def test_find_shows_each_codes_state(
    handed: Handed, synced: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _run(["find", "person3@acme.example", *handed.where, "--json"], capsys)
    assert status == 0
    (found,) = json.loads(out)
    assert found["state"] == "unused"
    assert found["emailMismatch"] is True
    assert found["certiverseEmail"] == "intruder@acme.example"
    assert found["holds"] is True

    status, text = _run(["find", "person2@acme.example", *handed.where], capsys)
    assert "reserved" in text
    assert "reservation RES-9" in text


def test_redemptions_writes_the_report_by_batch_and_by_program(
    handed: Handed, synced: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    by_batch = tmp_path / "batch.csv"
    status, out = _run(
        ["redemptions", "--batch", handed.batch_id, "--out", str(by_batch), *handed.where], capsys
    )
    assert status == 0
    assert "6 code(s) written" in out
    rows = list(csv.DictReader(io.StringIO(by_batch.read_text(encoding="utf-8-sig"))))
    assert {"email", "voucher_code", "state", "used_at", "expires_utc", "reservation_code",
            "batch_id"} <= set(rows[0])  # fmt: skip
    states = {r["email"]: r["state"] for r in rows}
    assert states["person1@acme.example"] == "used"
    assert states["person2@acme.example"] == "reserved"
    assert {r["batch_id"] for r in rows} == {handed.batch_id}

    by_program = tmp_path / "program.csv"
    status, out = _run(
        ["redemptions", "--program", SPRING, "--out", str(by_program), *handed.where, "--json"],
        capsys,
    )
    assert status == 0
    assert json.loads(out)["counts"] == {
        "unused": 4, "reserved": 1, "used": 1, "expired": 0, "inactive": 0,
    }  # fmt: skip

    status = main(["redemptions", "--batch", "f-nope", "--out", str(by_batch), *handed.where])
    assert status == 2
    assert "no batch f-nope" in capsys.readouterr().err


def test_the_batch_report_beside_the_results_and_the_summary_counts(
    handed: Handed, synced: dict
) -> None:
    summary = handed.pipeline.result(handed.batch_id).summary
    redemptions = summary["redemptions"]
    assert redemptions["counts"]["used"] == 1
    assert redemptions["results"].endswith(f"people.{handed.batch_id[:14]}.redemptions.csv")
    s3 = handed.pipeline.stack.client("s3")
    body = s3.get_object(Bucket=handed.pipeline.bucket, Key=redemptions["results"])["Body"].read()
    assert body.startswith(b"\xef\xbb\xbfemail,voucher_code,state,")


def test_reconcile_lists_codes_assigned_to_another_email(
    handed: Handed,
    synced: dict,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    status, out = _run(["reconcile", *handed.where, *handed.certiverse, "--json"], capsys)
    assert status == 1
    (mismatch,) = json.loads(out)["emailMismatches"]
    assert mismatch["voucherCode"] == handed.codes["person3@acme.example"]
    assert mismatch["holder"] == "person3@acme.example"
    assert mismatch["certiverseEmail"] == "intruder@acme.example"


def test_sync_follows_purchases_bought_before_it_existed(
    handed: Handed,
    synced: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = handed.pipeline.ledger
    (tracked,) = ledger.tracking.open_purchases()
    # A stack upgraded from before the sync: its purchases are not followed.
    dynamodb = handed.pipeline.stack.client("dynamodb")
    dynamodb.delete_item(
        TableName=handed.pipeline.stack.resource("LedgerTable").ref,
        Key={"pk": {"S": "SYNC#open"}, "sk": {"S": f"P#{tracked.purchase_code}"}},
    )
    assert ledger.tracking.open_purchases() == []
    monkeypatch.setenv("CERTIVERSE_TOKEN", TOKEN)
    status, out = _run(
        ["sync", "--track-existing", *handed.where, *handed.certiverse, "--json"], capsys
    )
    assert status == 0
    document = json.loads(out)
    assert document["trackedExisting"] == 1
    assert document["purchasesRead"] == 1
    (again,) = ledger.tracking.open_purchases()
    assert (again.purchase_code, again.rows) == (tracked.purchase_code, tracked.rows)
    status, text = _run(["sync", "--track-existing", *handed.where, *handed.certiverse], capsys)
    assert status == 0
    assert "now following" not in text  # already followed: nothing added
