"""After the hand-out: the redemption sync, its reports, expiry notices and enforced e-mail.

The whole pipeline through the local runner; Certiverse is the sandbox over HTTP, whose control
endpoints play what happens later (codes used, booked, deactivated, assigned in the portal,
expiry dates moved). Calls are counted from the sandbox's request log.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import CLOUD, SPRING, Receiver, World, people
from voucher_distributor.adapters.callbacks import SIGNATURE_HEADER, verify, webhook_secret
from voucher_distributor.models.ledger import AssignmentRecord
from voucher_distributor.pipeline.redemption import (
    VOUCHERS_EXPIRING,
    redemptions_key,
    sync_redemptions,
)
from voucher_distributor_cli.ops.sync import sync_services
from voucher_distributor_cli.ops.target import Target
from voucher_distributor_cli.sandbox import FaultSettings

PAGE = 10


def _hand_out(world: World, count: int, program: str = SPRING, *, start: int = 1) -> str:
    path = world.csv_file(people(count, program, start=start), name=f"{program[:5]}-{start}.csv")
    batch_id = world.pipeline.submit_csv(path)
    batch = world.pipeline.run_until_done(batch_id, timeout_s=180)
    assert batch.status == "DONE"
    return batch_id


def _codes(world: World, batch_id: str) -> list[AssignmentRecord]:
    return [
        a
        for a in world.pipeline.ledger.assignments.iter_assignments(batch_id)
        if a.status == "assigned"
    ]


def _voucher_listings(world: World) -> list[str]:
    """The purchase codes of every ``GET /api/vouchers`` page in the request log."""
    return [
        r.query.get("purchaseCode", "")
        for r in world.sandbox.request_log()
        if r.method == "GET" and r.path.rstrip("/").endswith("/api/vouchers")
    ]


def _in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _report(world: World, batch_id: str) -> list[dict[str, str]]:
    batch = world.pipeline.ledger.batches.get_batch(batch_id)
    assert batch is not None
    s3 = world.pipeline.stack.client("s3")
    body = s3.get_object(Bucket=world.pipeline.bucket, Key=redemptions_key(batch))["Body"].read()
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def test_the_sync_records_what_certiverse_says_and_reports_it(make_world) -> None:
    world = make_world(page_size=PAGE)
    listener = world.listen_to_events()
    batch_id = _hand_out(world, 25)
    codes = _codes(world, batch_id)
    assert len(codes) == 25
    c = [a.voucher_code for a in codes]
    control = httpx.Client(base_url=world.sandbox.root_url)
    assert control.put(
        "/_sandbox/vouchers",
        json={"voucherCodes": [c[0]], "set": {"isUsed": True,
              "usedBy": {"usedDateUtc": "2026-12-01T09:30:00Z", "firstName": "A"}}},
    ).json() == {"updated": 1, "notFound": []}  # fmt: skip
    world.sandbox.update_vouchers(
        [c[1]], {"reservationCode": "R-77", "reservationStatus": "Booked"}
    )
    world.sandbox.update_vouchers([c[2]], {"isActive": False})
    world.sandbox.update_vouchers([c[3]], {"recipientEmail": "someone.else@acme.example"})
    world.sandbox.update_vouchers([c[4]], {"recipientEmail": codes[4].email.upper()})
    world.sandbox.clear_request_log()

    first = world.pipeline.sync()

    assert first["codesChanged"] == 25
    assert first["emailMismatches"] == 1
    # One listing of the purchase, page after page: ⌈25 / 10⌉ calls, within the floor.
    listings = _voucher_listings(world)
    assert len(listings) == math.ceil(25 / PAGE)
    by_code = {a.voucher_code: a for a in _codes(world, batch_id)}
    states = {code: by_code[code].redemption.state for code in c}  # type: ignore[union-attr]
    assert [states[x] for x in c[:4]] == ["used", "reserved", "inactive", "unused"]
    used = by_code[c[0]].redemption
    assert used is not None
    assert used.used_at == "2026-12-01T09:30:00Z"
    reserved = by_code[c[1]].redemption
    assert reserved is not None
    assert (reserved.reservation_code, reserved.reservation_status) == (
        "R-77",
        "Booked",
    )
    mismatch = by_code[c[3]].redemption
    assert mismatch is not None
    assert mismatch.email_mismatch
    assert mismatch.certiverse_email == "someone.else@acme.example"
    same_person = by_code[c[4]].redemption
    assert same_person is not None
    assert not same_person.email_mismatch

    rows = _report(world, batch_id)
    assert len(rows) == 25
    assert {r["voucher_code"]: r["state"] for r in rows} == states
    assert next(r for r in rows if r["email_mismatch"] == "yes")["voucher_code"] == c[3]
    summary = world.pipeline.result(batch_id).summary
    assert summary["redemptions"]["counts"] == {
        "unused": 22, "reserved": 1, "used": 1, "expired": 0, "inactive": 1,
    }  # fmt: skip

    # Nothing changed in Certiverse: nothing is written, nothing announced.
    again = world.pipeline.sync()
    assert again["codesChanged"] == 0
    assert again["batchesReported"] == []
    assert not [e for e in world.events_heard(listener) if e["detail-type"] == VOUCHERS_EXPIRING]

    # Time moves: three unused codes come within 30 days of their expiry, one expires.
    world.sandbox.update_vouchers(c[5:8], {"expirationDateUtc": _in_days(10)})
    world.sandbox.update_vouchers([c[8]], {"expirationDateUtc": _in_days(-1)})
    third = world.pipeline.sync()
    assert third["expiringAnnounced"] == 3
    expiring = [e for e in world.events_heard(listener) if e["detail-type"] == VOUCHERS_EXPIRING]
    assert len(expiring) == 1
    detail = expiring[0]["detail"]
    assert (detail["partner"], detail["program"], detail["count"]) == ("Acme Corp", SPRING, 3)
    assert detail["byBatch"] == {batch_id: 3}
    key = detail["csv"].split("/", 3)[3]
    listed = world.pipeline.stack.client("s3").get_object(Bucket=world.pipeline.bucket, Key=key)
    notice_rows = list(csv.DictReader(io.StringIO(listed["Body"].read().decode("utf-8-sig"))))
    assert sorted(r["voucher_code"] for r in notice_rows) == sorted(c[5:8])
    assert {r["voucher_code"]: r["state"] for r in _report(world, batch_id)}[c[8]] == "expired"

    # Each code is announced once: another run (and more time) announces nothing new.
    world.sandbox.update_vouchers(c[5:8], {"expirationDateUtc": _in_days(5)})
    assert world.pipeline.sync()["expiringAnnounced"] == 0
    assert not [e for e in world.events_heard(listener) if e["detail-type"] == VOUCHERS_EXPIRING]


def test_a_settled_purchase_is_not_read_again(make_world) -> None:
    world = make_world(page_size=PAGE)
    spring = _hand_out(world, 12, SPRING)
    cloud = _hand_out(world, 8, CLOUD, start=100)
    spring_codes = [a.voucher_code for a in _codes(world, spring)]
    spring_purchase = _codes(world, spring)[0].purchase_code
    cloud_purchase = _codes(world, cloud)[0].purchase_code
    # Every Spring code is settled: used, inactive or expired.
    world.sandbox.update_vouchers(spring_codes[:6], {"isUsed": True})
    world.sandbox.update_vouchers(spring_codes[6:9], {"isActive": False})
    world.sandbox.update_vouchers(spring_codes[9:], {"expirationDateUtc": _in_days(-2)})

    first = world.pipeline.sync()
    assert (first["purchasesRead"], first["purchasesSettled"]) == (2, 1)
    world.sandbox.clear_request_log()

    second = world.pipeline.sync()
    assert second["purchasesRead"] == 1
    listed = set(_voucher_listings(world))
    assert listed == {cloud_purchase}
    assert spring_purchase not in listed
    assert second["byProgram"][f"Acme Corp / {SPRING}"] == {
        "unused": 0, "reserved": 0, "used": 6, "expired": 3, "inactive": 3,
    }  # fmt: skip
    assert second["byProgram"][f"Acme Corp / {CLOUD}"]["unused"] == 8

    # Half the Cloud codes used: the run that sees it reads the purchase whole once (to learn
    # when); after that only its unused, active codes are paged through (one page of 4).
    cloud_codes = [a.voucher_code for a in _codes(world, cloud)]
    world.sandbox.update_vouchers(cloud_codes[:4], {"isUsed": True})
    assert world.pipeline.sync()["codesChanged"] == 4
    world.sandbox.clear_request_log()
    steady = world.pipeline.sync()
    assert steady["codesChanged"] == 0
    queries = [
        r.query for r in world.sandbox.request_log() if r.path.rstrip("/").endswith("/api/vouchers")
    ]
    assert queries == [{"purchaseCode": cloud_purchase, "isUsed": "false", "isActive": "true"}]
    assert steady["byProgram"][f"Acme Corp / {CLOUD}"] == {
        "unused": 4, "reserved": 0, "used": 4, "expired": 0, "inactive": 0,
    }  # fmt: skip


ENFORCED = "Example Corp Employee Upskilling"


def test_an_enforced_email_program_is_refused_by_default(make_world) -> None:
    refusing = make_world()
    path = refusing.csv_file(people(3, ENFORCED, domain="example.com"))
    batch = refusing.pipeline.run_until_done(refusing.pipeline.submit_csv(path), timeout_s=120)
    rows = refusing.pipeline.result(batch.batch_id).rows
    assert {r["status"] for r in rows} == {"rejected"}
    assert all("enforceAssignedEmailToBookExam" in r["reason"] for r in rows)
    assert all("AcceptPortalAssignment=true" in r["reason"] for r in rows)
    assert not refusing.sandbox.purchases() or all(
        p.program_name != ENFORCED for p in refusing.sandbox.purchases()
    )


def test_an_enforced_email_program_is_bought_with_accept_portal_assignment(make_world) -> None:
    accepting = make_world(parameters={"AcceptPortalAssignment": "true"})
    path = accepting.csv_file(people(3, ENFORCED, domain="example.com"))
    batch = accepting.pipeline.run_until_done(accepting.pipeline.submit_csv(path), timeout_s=120)
    rows = accepting.pipeline.result(batch.batch_id).rows
    assert {r["status"] for r in rows} == {"assigned"}
    assert all("assign this code to the recipient's e-mail in the Certiverse portal" in r["reason"]
               for r in rows)  # fmt: skip


def test_an_expiry_notice_reaches_the_batchs_callback_signed(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    """The sync's one callback hook (``_send_callback``) goes through the durable outbox: the
    deliverer posts the notice to the batch's receiver (down at first), signed; it arrives once
    per ``webhook-id``, and a second sync announces nothing again."""
    state, url = receiver
    state.down_for = 1
    world = make_world(page_size=PAGE)
    batch_id = _hand_out(world, 5)
    world.pipeline.ledger.batches.update_batch(batch_id, callback_url=url)
    codes = [a.voucher_code for a in _codes(world, batch_id)]
    world.sandbox.update_vouchers(codes[:2], {"expirationDateUtc": _in_days(3)})

    target = Target.local(world.pipeline.stack.endpoint_url)
    for expected in (2, 0):
        services = sync_services(target, certiverse_url=world.sandbox.base_url)
        outcome = sync_redemptions(services)
        services.certiverse.close()
        assert outcome.expiring_announced == expected
        world.pipeline.run_until_idle(timeout_s=60)

    assert [r.answered for r in state.got] == [503, 200]
    kept = state.accepted_once_per_id()
    (webhook_id,) = kept
    assert webhook_id.startswith(f"msg_{batch_id}_vouchers-expiring-")
    stack = world.pipeline.stack
    key = stack.client("secretsmanager").get_secret_value(
        SecretId=stack.resource("CallbackSigningSecret").ref
    )["SecretString"]
    for got in state.got:
        body = Webhook(webhook_secret(key)).verify(got.body, got.headers)
        assert verify(key, got.headers[SIGNATURE_HEADER.lower()], got.body,
                      now=int(got.headers["webhook-timestamp"]))  # fmt: skip
        assert body["type"] == VOUCHERS_EXPIRING
        assert (body["batchId"], body["count"]) == (batch_id, 2)
        assert sorted(v["voucherCode"] for v in body["vouchers"]) == sorted(codes[:2])
        assert body["csv"].startswith(f"s3://{world.pipeline.bucket}/results/expiring/")


def test_certiverse_down_leaves_purchases_for_the_next_run(make_world) -> None:
    world = make_world(page_size=PAGE)
    batch_id = _hand_out(world, 6)
    code = _codes(world, batch_id)[0].voucher_code
    world.sandbox.update_vouchers([code], {"isUsed": True})
    world.sandbox.set_faults(FaultSettings(error_503_rate=1.0, retry_after_s=0))
    down = world.pipeline.sync()
    assert (down["purchasesUnread"], down["purchasesRead"], down["codesChanged"]) == (1, 0, 0)
    world.sandbox.set_faults(FaultSettings())
    up = world.pipeline.sync()
    assert (up["purchasesUnread"], up["codesChanged"]) == (0, 6)
    states = {a.voucher_code: a.redemption.state for a in _codes(world, batch_id)}  # type: ignore[union-attr]
    assert states[code] == "used"
