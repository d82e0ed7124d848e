"""`resend`: the same code mailed again through the local pipeline; `resend --to` moves the code
to a corrected address; the API's ``POST /v1/distributions/{id}/resend``."""

from __future__ import annotations

import json
import time
import uuid
from email import message_from_bytes
from email.policy import default
from typing import Any

from tests.e2e.conftest import SPRING, World
from voucher_distributor.domain import standard_webhooks as sw
from voucher_distributor.models.api import Scope
from voucher_distributor.models.resend import ResendSelection
from voucher_distributor_cli.local.up import api_gateway_event
from voucher_distributor_cli.ops.api_clients import add_client
from voucher_distributor_cli.ops.find import find_recipient
from voucher_distributor_cli.ops.resend import resend
from voucher_distributor_cli.ops.target import Target

SIM = "simulator.amazonses.com"


def _pump(world: World) -> None:
    assert world.pipeline.lambdas is not None
    world.pipeline.lambdas.run_until_idle(timeout_s=60)


def _code_in(raw: bytes) -> str:
    body = message_from_bytes(raw, policy=default).get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_resend_to_moves_the_code_to_the_new_address(make_world) -> None:
    world: World = make_world(email=True)
    # A mistyped address SES bounces (the simulator's bounce@ stands for it).
    rows = [
        {"email": f"bounce@{SIM}", "first_name": "Tia", "program_name": SPRING},
        {"email": "other@acme.example", "first_name": "Ot", "program_name": SPRING},
    ]
    batch = world.pipeline.submit_csv(world.csv_file(rows))
    world.pipeline.run_until_done(batch, timeout_s=120)
    ledger = world.pipeline.ledger
    delivery = ledger.deliveries.get(batch, 1)
    assert delivery is not None
    assert delivery.state.value == "bounced"
    code = ledger.assignments.get_assignments([(batch, 1)])[(batch, 1)].voucher_code
    target = Target.local(world.pipeline.stack.endpoint_url)
    report = resend(
        target, batch, ResendSelection(row=1, to="tia@acme.example"), now=time.time() + 61
    )
    assert [a.row for a in report.asked] == [1]
    _pump(world)
    world.pipeline.run_until_done(batch, timeout_s=60)
    resent = [m for m in world.pipeline.ses.sent if m.to == ("tia@acme.example",)]
    assert len(resent) == 1  # one e-mail for one ask
    assert code in _code_in(resent[0].raw)  # the same code
    # Nobody else got that code; the bounced address got only its first e-mail.
    assert [m.to[0] for m in world.pipeline.ses.sent].count(f"bounce@{SIM}") == 1
    for mail in world.pipeline.ses.sent:
        if mail.to != ("tia@acme.example",) and mail.to != (f"bounce@{SIM}",):
            assert code not in _code_in(mail.raw)
    # The code moved: the new address holds it, the old one holds nothing.
    assert [(f["voucherCode"], f["holds"]) for f in find_recipient(target, "tia@acme.example")] == [
        (code, True)
    ]
    assert find_recipient(target, f"bounce@{SIM}") == []
    (holding,) = ledger.holdings.holdings_for_email("tia@acme.example")
    assert holding.row_number == 1
    after = ledger.deliveries.get(batch, 1)
    assert after is not None
    assert (after.state.value, after.attempts, after.to_address) == (
        "delivered",
        2,
        "tia@acme.example",
    )
    result = world.pipeline.result(batch, world.tmp / "out")
    assert {r["row"]: r["email_status"] for r in result.rows} == {
        "1": "delivered",
        "2": "delivered",
    }


def _api(world: World) -> Any:
    target = Target.local(world.pipeline.stack.endpoint_url)
    secret = add_client(target, "hr", scopes=[Scope.SUBMIT, Scope.READ])["secret"]
    reader = add_client(target, "reader", scopes=[Scope.READ])["secret"]

    def call(path: str, document: Any, *, key: str = secret) -> tuple[int, dict[str, Any]]:
        body = json.dumps(document).encode() if not isinstance(document, bytes) else document
        signed = sw.headers(key, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
        headers = {"content-type": "application/json", "host": "api.example", **signed}
        event = api_gateway_event("POST", path, headers, body, "api.example")
        assert world.pipeline.lambdas is not None
        got = world.pipeline.lambdas.invoke("ApiFunction", event)
        return int(got["statusCode"]), json.loads(got["body"])

    return call, reader


def test_the_api_resends_and_refuses_what_it_cannot_send(make_world) -> None:
    world: World = make_world(email=True)
    batch = world.pipeline.submit_request(
        {"requestId": "resend-1", "partnerName": "Acme Corp", "programName": SPRING,
         "sendEmail": False,
         "recipients": [{"email": "ann@acme.example"}, {"email": "bob@acme.exmaple"}]}
    )  # fmt: skip
    assert batch is not None
    world.pipeline.run_until_done(batch, timeout_s=120)
    assert world.pipeline.ses.sent == []  # opted out: nobody mailed yet
    call, reader = _api(world)
    path = f"/v1/distributions/{batch}/resend"
    status, answer = call(path, {"email": "Ann@acme.example"})
    assert status == 202, answer
    assert [a["row"] for a in answer["asked"]] == [1]
    status, answer = call(path, {"row": 2, "to": "bob@acme.example"})
    assert status == 202, answer
    assert answer["asked"] == [
        {"row": 2, "to": "bob@acme.example", "was": None, "movedFrom": "bob@acme.exmaple"}
    ]
    _pump(world)
    assert sorted(m.to[0] for m in world.pipeline.ses.sent) == [
        "ann@acme.example", "bob@acme.example",
    ]  # fmt: skip
    holding = world.pipeline.ledger.holdings.holdings_for_email("bob@acme.example")
    assert [h.row_number for h in holding] == [2]
    # Again at once: refused (a minute between e-mails to a person); nothing queued.
    status, problem = call(path, {"row": 1})
    assert status == 409
    assert "60 s" in problem["detail"]
    assert call(path, {"row": 1, "status": "bounced"})[0] == 422  # one way of naming rows
    assert call(path, {"rows": [1]})[0] == 422  # not a field
    assert call(path, {"status": "bounced", "to": "x@acme.example"})[0] == 422
    assert call("/v1/distributions/nope/resend", {"row": 1})[0] == 404
    assert call(path, {"row": 1}, key=reader)[0] == 403  # the submit scope
    _pump(world)
    assert len(world.pipeline.ses.sent) == 2
