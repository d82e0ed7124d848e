"""``approve``, ``reject`` and ``status`` (its overview) as an operator types them, against the
local runner's stack with a low ApprovalThreshold."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.local_stack import sandboxed_pipeline
from voucher_distributor_cli.arguments import invocation
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.main import main
from voucher_distributor_cli.sandbox import SandboxConfig

TOKEN = "approval-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    tmp = tmp_path_factory.mktemp("approval")
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2, seed=3)
    limits = {"ApprovalThreshold": "3", "DailyVoucherLimit": "100"}
    with sandboxed_pipeline(tmp, config, PARTNER, parameters=limits) as (_, started):
        yield started


def _waiting(pipeline: LocalPipeline, tmp_path: Path, name: str, count: int = 5) -> str:
    path = tmp_path / name
    path.write_text(
        "email,program_name\r\n"
        + "".join(f"{name[:-4]}{n}@acme.example,{SPRING}\r\n" for n in range(count)),
        encoding="utf-8",
    )
    batch_id = pipeline.submit_csv(path)
    batch = pipeline.run_until_done(batch_id, timeout_s=120, stop_when_waiting=True)
    assert batch.status.value == "AWAITING_APPROVAL"
    return batch_id


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_approve_records_who_and_the_batch_is_bought(
    pipeline: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--endpoint-url", pipeline.stack.endpoint_url]
    batch_id = _waiting(pipeline, tmp_path, "five.csv")

    code, out, _ = _run(["status", *where, "--json"], capsys)
    assert code == 0
    overview = json.loads(out)
    assert overview["dailyVoucherLimit"] == 100
    (waiting,) = [b for b in overview["awaitingApproval"] if b["batchId"] == batch_id]
    assert waiting["vouchers"] == 5
    assert "over ApprovalThreshold (3)" in waiting["reason"]
    code, out, _ = _run(["status", *where], capsys)
    assert f"awaiting approval: {batch_id}  5 vouchers" in out
    assert f"voucher-distributor approve {batch_id}" in out
    code, out, _ = _run(["status", batch_id, *where], capsys)
    assert "waiting for approve/reject until" in out

    code, out, _ = _run(["approve", batch_id, *where, "--json"], capsys)
    assert code == 0
    decided = json.loads(out)
    assert decided["decision"] == "approved"
    assert decided["by"].startswith("arn:aws:")
    code, _, err = _run(["reject", batch_id, "--reason", "too late", *where], capsys)
    assert code == 2
    assert "already approved" in err
    assert "a decision is final" in err

    batch = pipeline.run_until_done(batch_id, timeout_s=120)
    assert batch.status.value == "DONE"
    code, out, _ = _run(["status", batch_id, *where], capsys)
    assert f"approved by {decided['by']}" in out
    code, out, _ = _run(["status", *where, "--json"], capsys)
    assert json.loads(out)["vouchersToday"] >= 5


def test_reject_needs_a_reason_and_refuses_a_batch_that_is_not_waiting(
    pipeline: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--endpoint-url", pipeline.stack.endpoint_url]
    with pytest.raises(SystemExit) as usage:
        main(["reject", "f-any", *where])
    assert usage.value.code == 2
    assert "--reason" in capsys.readouterr().err

    small = tmp_path / "two.csv"
    small.write_text(f"email,program_name\r\nx1@acme.example,{SPRING}\r\n", encoding="utf-8")
    done = pipeline.submit_csv(small)
    pipeline.run_until_done(done, timeout_s=120)
    code, _, err = _run(["approve", done, *where], capsys)
    assert code == 2
    assert "is DONE, not awaiting approval" in err
    code, _, err = _run(["approve", "f-nope", *where], capsys)
    assert code == 2
    assert "no batch f-nope" in err

    batch_id = _waiting(pipeline, tmp_path, "reject.csv")
    code, out, _ = _run(["reject", batch_id, "--reason", "wrong list", *where], capsys)
    assert code == 0
    assert "rejected: nothing is bought" in out
    batch = pipeline.run_until_done(batch_id, timeout_s=120)
    result = pipeline.result(batch_id)
    assert batch.status.value == "DONE"
    assert result.summary["status"] == "rejected"
    assert {r["status"] for r in result.rows} == {"rejected"}
    assert "wrong list" in result.rows[0]["reason"]


def test_issue25_9_hints_print_a_command_that_runs_with_the_flags_given(
    pipeline: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status``, ``approve`` and ``reject`` hint the next command as it can be pasted: the
    command as started (not a bare name the shell may not find) and the stack options given."""
    where = ["--endpoint-url", pipeline.stack.endpoint_url, "--stack", "voucher-distributor-local"]
    flags = " ".join(where)
    started = invocation()
    beside = Path(sys.executable).parent / "voucher-distributor"
    if shutil.which("voucher-distributor") is None and beside.exists():
        assert started != "voucher-distributor"  # not on PATH: its path, as after `make demo`
        assert Path(started).resolve() == beside.resolve()
    assert (
        invocation("/tmp/x/.venv/bin/voucher-distributor") == "/tmp/x/.venv/bin/voucher-distributor"
    )

    first = _waiting(pipeline, tmp_path, "hint1.csv")
    second = _waiting(pipeline, tmp_path, "hint2.csv")
    code, out, _ = _run(["status", *where], capsys)
    assert code == 0
    assert f"  {started} approve {first} {flags}\n" in out
    assert f'  {started} reject {first} --reason "…" {flags}\n' in out
    code, out, _ = _run(["status", first, *where], capsys)
    assert "0 existing" in out  # issue 25 (12): the existing count, and no results path yet
    assert "  results  not written yet: they are when the batch ends" in out
    code, out, _ = _run(["approve", first, *where], capsys)
    assert code == 0
    assert out.rstrip().endswith(f"follow it with `{started} status {first} {flags}`")
    code, out, _ = _run(["reject", second, "--reason", "no", *where], capsys)
    assert out.rstrip().endswith(f"follow it with `{started} status {second} {flags}`")
    command = out.rstrip().rsplit("`", 2)[1].split()
    assert command[-4:] == where  # pasted, it reaches the same stack
    pipeline.run_until_done(first, timeout_s=120)
    code, out, _ = _run(["status", first, *where], capsys)
    assert f"  results  s3://{pipeline.bucket}/results/hint1.{first[:14]}.results.csv" in out


def test_whoever_uploaded_a_batch_may_not_approve_it_from_the_cli(
    pipeline: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ApprovalBySubmitter=false (the default): the uploader's principal (S3 names it
    ``AWS:<user id>``) deciding with the same credentials is refused; nothing is recorded."""
    where = ["--endpoint-url", pipeline.stack.endpoint_url]
    batch_id = _waiting(pipeline, tmp_path, "mine.csv")
    batch = pipeline.ledger.batches.get_batch(batch_id)
    assert batch is not None
    assert (batch.channel, batch.submitted_by) == ("upload", "AWS:local-runner")
    code, out, _ = _run(["status", batch_id, *where, "--json"], capsys)
    shown = json.loads(out)
    assert (shown["channel"], shown["submittedBy"]) == ("upload", "AWS:local-runner")
    assert shown["partners"] == [PARTNER]
    code, out, _ = _run(["status", batch_id, *where], capsys)
    assert "sent     upload by AWS:local-runner; partners Acme Corp" in out
    # The local runner uploads as "local-runner"; here the operator running the CLI is the one
    # who uploaded: their STS user id, as an S3 notification would name it.
    sts = pipeline.stack.client("sts").get_caller_identity()
    pipeline.ledger.batches.update_batch(batch_id, submitted_by=f"AWS:{sts['UserId']}")
    for command in (["approve", batch_id], ["reject", batch_id, "--reason", "mine"]):
        code, _, err = _run([*command, *where], capsys)
        assert code == 2
        assert "submitted this batch and may not approve or reject it" in err
        assert "ApprovalBySubmitter" in err
    still = pipeline.ledger.batches.get_batch(batch_id)
    assert still is not None
    assert still.approval_decision is None
    # someone else decides
    pipeline.ledger.batches.update_batch(batch_id, submitted_by="AWS:AIDASOMEONEELSE")
    code, _, _ = _run(["reject", batch_id, "--reason", "not mine to approve", *where], capsys)
    assert code == 0
