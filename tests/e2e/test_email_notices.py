"""HR hears about undeliverable rows: the callback ``Voucher Emails Undeliverable`` (at most
once an hour per batch), through the outbox to a real receiver on loopback."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import SPRING, Receiver, World
from voucher_distributor.models.resend import ResendSelection
from voucher_distributor_cli.ops.resend import resend
from voucher_distributor_cli.ops.target import Target

SIM = "simulator.amazonses.com"
EVENT = "Voucher Emails Undeliverable"


def _notices(state: Receiver) -> list[dict]:
    bodies = [json.loads(r.body) for r in state.got if r.answered == 200]
    return [b for b in bodies if b.get("type") == EVENT]


def test_undeliverable_rows_are_announced_once_an_hour(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    world: World = make_world(email=True)
    batch = world.pipeline.submit_request(
        {"requestId": "notice-1", "partnerName": "Acme Corp", "programName": SPRING,
         "callbackUrl": url,
         "recipients": [{"email": f"bounce@{SIM}"}, {"email": f"complaint@{SIM}"},
                        {"email": f"suppressionlist@{SIM}"}, {"email": f"success@{SIM}"}]}
    )  # fmt: skip
    assert batch is not None
    world.pipeline.run_until_done(batch, timeout_s=120)
    lambdas = world.pipeline.lambdas
    assert lambdas is not None
    lambdas.run_until(lambda: bool(_notices(state)), timeout_s=60)
    lambdas.run_until_idle(timeout_s=60)
    (notice,) = _notices(state)
    assert notice["batchId"] == batch
    assert notice["notice"] == 1
    got = {r["row"]: (r["email"], r["state"]) for r in notice["rows"]}
    assert got == {
        1: (f"bounce@{SIM}", "bounced"),
        2: (f"complaint@{SIM}", "complained"),
        3: (f"suppressionlist@{SIM}", "suppressed"),
    }
    assert "550 5.1.1" in notice["rows"][0]["reason"]
    assert notice["counts"] == {"bounced": 1, "complained": 1, "suppressed": 1}
    # The bounced row resent, and bounced again: within the hour, no second notice (the
    # check waits for the hour; the delivered and the announced rows are not in it).
    target = Target.local(world.pipeline.stack.endpoint_url)
    asked = resend(target, batch, ResendSelection(row=1), now=time.time() + 61)
    assert [a.row for a in asked.asked] == [1]
    ledger = world.pipeline.ledger

    def bounced_again() -> bool:
        d = ledger.deliveries.get(batch, 1)
        return d is not None and d.attempts == 2 and d.state.value == "bounced"

    lambdas.run_until(bounced_again, timeout_s=60)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lambdas.pump_once()
        time.sleep(0.1)
    assert len(_notices(state)) == 1
