"""`deliveries` and `resend` against the local runner's stack (moto's SES, the local SES events)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default

import pytest

from tests.integration.local_stack import run_csv, sandboxed_pipeline
from voucher_distributor.models.resend import ResendSelection
from voucher_distributor_cli.local.run import LocalPipeline
from voucher_distributor_cli.main import main
from voucher_distributor_cli.ops.find import find_recipient
from voucher_distributor_cli.ops.resend import resend
from voucher_distributor_cli.ops.target import OpsError, Target
from voucher_distributor_cli.sandbox import SandboxConfig

TOKEN = "ops-token"
PARTNER = "Acme Corp"
SPRING = "Spring Certification Drive"
SIM = "simulator.amazonses.com"

PEOPLE = (
    "email,first_name,program_name\r\n"
    f"typo@acme.exmaple,Tia,{SPRING}\r\n"
    f"bounce@{SIM},Bo,{SPRING}\r\n"
    f"complaint@{SIM},Co,{SPRING}\r\n"
    f"person4@acme.example,Pe,{SPRING}\r\n"
)


@dataclass
class Ran:
    pipeline: LocalPipeline
    batch_id: str

    @property
    def where(self) -> list[str]:
        return ["--endpoint-url", self.pipeline.stack.endpoint_url]

    @property
    def target(self) -> Target:
        return Target.local(self.pipeline.stack.endpoint_url)

    def pump(self) -> None:
        assert self.pipeline.lambdas is not None
        self.pipeline.lambdas.run_until_idle(timeout_s=60)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    tmp = tmp_path_factory.mktemp("ops-resend")
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2, seed=3)
    tuning = {"INITIAL_CHECK_SECONDS": "1"}
    with sandboxed_pipeline(
        tmp, config, PARTNER, tuning=tuning, email=True, mail_dir=tmp / "mail"
    ) as (_, pipeline):
        batch_id = run_csv(pipeline, tmp / "people.csv", PEOPLE)
        yield Ran(pipeline, batch_id)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_deliveries_lists_each_rows_state(ran: Ran, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["deliveries", ran.batch_id, *ran.where, "--json"], capsys)
    assert code == 0
    view = json.loads(out)
    states = {r["row"]: r["state"] for r in view["rows"]}
    assert states == {1: "delivered", 2: "bounced", 3: "complained", 4: "delivered"}
    assert view["counts"] == {"delivered": 2, "bounced": 1, "complained": 1}
    bounced = next(r for r in view["rows"] if r["row"] == 2)
    assert "550 5.1.1" in bounced["reason"]
    assert bounced["attempts"] == 1

    code, out, _ = _run(["deliveries", ran.batch_id, *ran.where, "--status", "bounced"], capsys)
    assert code == 0
    assert f"row      2  bounced     bounce@{SIM}" in out
    assert "row      1" not in out

    code, _, err = _run(["deliveries", "no-such-batch", *ran.where], capsys)
    assert code == 2
    assert "no batch no-such-batch" in err


def test_resend_is_refused_within_a_minute_and_for_complaints(
    ran: Ran, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["resend", ran.batch_id, "--row", "4", *ran.where], capsys)
    assert code == 2
    assert "less than 60 s ago" in err
    later = time.time() + 120
    report = resend(ran.target, ran.batch_id, ResendSelection(row=3), now=later)
    assert report.asked == []
    assert "complained" in report.refused[0][1]
    assert "--force" in report.refused[0][1]
    with pytest.raises(OpsError, match="one row"):
        resend(ran.target, ran.batch_id, ResendSelection(status="bounced", to="x@acme.example"))
    with pytest.raises(SystemExit):  # argparse: not an e-mail state
        main(["resend", ran.batch_id, "--status", "nope", *ran.where])
    sent = len(ran.pipeline.ses.sent)
    ran.pump()
    assert len(ran.pipeline.ses.sent) == sent  # nothing was queued


def test_resend_to_moves_the_code_to_the_corrected_address(ran: Ran) -> None:
    ledger = ran.pipeline.ledger
    before = ledger.assignments.get_assignments([(ran.batch_id, 1)])[(ran.batch_id, 1)]
    code = before.voucher_code
    report = resend(
        ran.target,
        ran.batch_id,
        ResendSelection(row=1, to="Tia@Acme.example"),
        now=time.time() + 120,
    )
    assert [(a.row, a.to, a.moved_from) for a in report.asked] == [
        (1, "tia@acme.example", "typo@acme.exmaple")
    ]
    sent = len(ran.pipeline.ses.sent)
    ran.pump()
    (mail,) = ran.pipeline.ses.sent[sent:]
    assert mail.to == ("tia@acme.example",)
    body = message_from_bytes(mail.raw, policy=default).get_body(("plain",))
    assert body is not None
    assert code in body.get_content()  # the same code, not a new one
    delivery = ledger.deliveries.get(ran.batch_id, 1)
    assert delivery is not None
    assert delivery.attempts == 2
    assert delivery.to_address == "tia@acme.example"
    # The holding moved: the old address holds nothing, the new one holds the code.
    assert ledger.holdings.holdings_for_email("typo@acme.exmaple") == []
    (holding,) = ledger.holdings.holdings_for_email("tia@acme.example")
    assert (holding.batch_id, holding.row_number) == (ran.batch_id, 1)
    found = find_recipient(ran.target, "tia@acme.example")
    assert [(f["voucherCode"], f["holds"]) for f in found] == [(code, True)]
    assert find_recipient(ran.target, "typo@acme.exmaple") == []
    ask = ledger.resends.get(ran.batch_id, 1)
    assert ask is not None
    (recorded,) = ask["asks"]
    assert recorded["from"] == "typo@acme.exmaple"
    assert recorded["to"] == "tia@acme.example"
    assert recorded["by"].startswith("arn:aws:")
    # A second ask right after is refused (the minute between e-mails to a person).
    again = resend(ran.target, ran.batch_id, ResendSelection(row=1), now=time.time() + 130)
    assert again.asked == []
    assert "60 s" in again.refused[0][1]


def test_resend_bounced_rows_after_the_minute(ran: Ran) -> None:
    report = resend(
        ran.target, ran.batch_id, ResendSelection(status="bounced"), now=time.time() + 120
    )
    assert [(a.row, a.was) for a in report.asked] == [(2, "bounced")]
    sent = len(ran.pipeline.ses.sent)
    ran.pump()
    assert [m.to for m in ran.pipeline.ses.sent[sent:]] == [(f"bounce@{SIM}",)]
    delivery = ran.pipeline.ledger.deliveries.get(ran.batch_id, 2)
    assert delivery is not None
    assert (delivery.attempts, delivery.state.value) == (2, "bounced")
