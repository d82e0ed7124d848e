"""Durable callbacks end to end (issue 12, item 4): a real receiver on loopback, the local
runner's callback queue and deliverer, the retry schedule compressed to seconds.

A receiver that is down for the first attempts still gets each event, and exactly once per
``webhook-id`` after deduplication; every attempt is recorded (status, latency) and shown by
the summary, ``status`` and ``local run``'s line; signatures verify with the reference
``standardwebhooks`` package. A receiver that is always down ends ``failed`` with the
``CallbacksFailed`` metric, and ``redeliver`` sends the event once it is up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from voucher_distributor.adapters.callbacks import SIGNATURE_HEADER, verify, webhook_secret
from voucher_distributor.models.ledger import BatchStatus
from voucher_distributor_cli.main import main
from voucher_distributor_cli.ops.redeliver import format_redelivered, redeliver_callbacks
from voucher_distributor_cli.ops.status import batch_status, format_status
from voucher_distributor_cli.ops.target import Target

from .conftest import SPRING, Receiver, World


def _signing_key(world: World) -> str:
    stack = world.pipeline.stack
    secret = stack.resource("CallbackSigningSecret").ref
    return str(stack.client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"])


def _request(world: World, request_id: str, url: str, count: int = 2, **extra: Any) -> str:
    batch_id = world.pipeline.submit_request(
        {"requestId": request_id, "programName": SPRING, "callbackUrl": url,
         "recipients": [{"email": f"{request_id}-{n}@acme.example"} for n in range(count)],
         **extra}
    )  # fmt: skip
    assert batch_id is not None
    return batch_id


def test_a_receiver_down_at_first_gets_the_event_once_signed_and_every_attempt_is_shown(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.down_for = 2
    world: World = make_world(parameters={"CallbackRetrySchedule": "1,1,1"})
    batch_id = _request(world, "cb-durable", url)
    batch = world.pipeline.run_until_done(batch_id, timeout_s=90)  # waits for the callback too
    assert batch.status == BatchStatus.DONE

    assert [r.answered for r in state.got] == [503, 503, 200]
    kept = state.accepted_once_per_id()
    (deliveries,) = [world.pipeline.ledger.outbox.callback_deliveries(batch_id)]
    assert list(kept) == [d.webhook_id for d in deliveries] == [f"msg_{batch_id}_completed"]
    # The same bytes and the same id on every attempt; each attempt signed afresh.
    assert {r.body for r in state.got} == {kept[f"msg_{batch_id}_completed"][0]}
    assert {r.headers["webhook-id"] for r in state.got} == {f"msg_{batch_id}_completed"}
    key = _signing_key(world)
    for r in state.got:
        payload = Webhook(webhook_secret(key)).verify(r.body, r.headers)
        assert payload["type"] == "Voucher Batch Completed"
        assert payload["batchId"] == batch_id
        assert payload["counts"]["assigned"] == 2
        assert r.headers["webhook-signature"].startswith("v1,")
        assert verify(key, r.headers[SIGNATURE_HEADER.lower()], r.body,
                      now=int(r.headers["webhook-timestamp"]))  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal; a wrong key must not pass
        Webhook(webhook_secret("another-key")).verify(state.got[0].body, state.got[0].headers)

    # Every attempt recorded, and shown: summary.json, status, local run's line.
    result = world.pipeline.result(batch_id)
    (shown,) = result.summary["callbacks"]
    assert shown["state"] == "delivered"
    assert [a["status"] for a in shown["attempts"]] == [503, 503, 200]
    assert all(a["latencyMs"] >= 0 and a["at"].endswith("Z") for a in shown["attempts"])
    assert shown["url"].endswith("/hooks/vouchers")  # no query string (it holds a token)
    assert "s3cr3t" not in json.dumps(result.summary)
    assert result.final_line()["callbacks"] == {"delivered": 1, "pending": 0, "failed": 0}
    view = batch_status(Target.local(world.pipeline.stack.endpoint_url), batch_id)
    assert view["callbacks"] == result.summary["callbacks"]
    text = format_status(view)
    assert "attempts: 503" in text
    assert "delivered" in text
    assert "s3cr3t" not in text
    log = (world.tmp / "handlers.log").read_text(encoding="utf-8")
    assert "s3cr3t" not in log
    assert '"CallbacksDelivered"' in log


def test_a_receiver_that_stays_down_fails_visibly_and_redeliver_sends_it_once_up(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.down_for = None
    world: World = make_world(parameters={"CallbackRetrySchedule": "1,1"})
    batch_id = _request(world, "cb-down", url, count=1)
    world.pipeline.run_until_done(batch_id, timeout_s=90)
    (delivery,) = world.pipeline.ledger.outbox.callback_deliveries(batch_id)
    assert delivery.state == "failed"
    assert [a.status for a in delivery.attempts] == [503, 503, 503]
    log = (world.tmp / "handlers.log").read_text(encoding="utf-8")
    assert '"CallbacksFailed"' in log
    assert f"voucher-distributor redeliver {batch_id}" in log
    assert world.pipeline.result(batch_id).final_line()["callbacks"]["failed"] == 1

    state.heal()
    endpoint = world.pipeline.stack.endpoint_url
    view = redeliver_callbacks(Target.local(endpoint), batch_id)
    assert "1 callback(s) queued again" in format_redelivered(view, include_all=False)
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    (delivery,) = world.pipeline.ledger.outbox.callback_deliveries(batch_id)
    assert delivery.state == "delivered"
    assert [(a.round, a.status) for a in delivery.attempts] == [(0, 503)] * 3 + [(1, 200)]
    assert list(state.accepted_once_per_id()) == [delivery.webhook_id]
    assert world.pipeline.result(batch_id).summary["callbacks"][0]["state"] == "delivered"
    # Nothing failed is left: redeliver says so, and --all sends it again under the same id.
    again = redeliver_callbacks(Target.local(endpoint), batch_id)
    assert again["redelivered"] == []
    again = redeliver_callbacks(Target.local(endpoint), batch_id, include_all=True)
    assert again["redelivered"] == [delivery.webhook_id]
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    assert len(state.accepted_once_per_id()) == 1  # a repeat the receiver drops by its id
    assert [r.answered for r in state.got][-2:] == [200, 200]


def test_redeliver_says_when_a_batch_has_no_callbacks(
    make_world, capsys: pytest.CaptureFixture[str]
) -> None:
    world: World = make_world()
    batch_id = world.pipeline.submit_request(
        {"requestId": "cb-none", "programName": SPRING,
         "recipients": [{"email": "none@acme.example"}]}
    )  # fmt: skip
    assert batch_id is not None
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    code = main(["redeliver", batch_id, "--endpoint-url", world.pipeline.stack.endpoint_url])
    assert code == 2
    assert "no callbacks to redeliver" in capsys.readouterr().err


def test_awaiting_approval_and_the_rejection_reach_hr_as_two_events(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    world: World = make_world(parameters={"ApprovalThreshold": "2"})
    batch_id = _request(world, "cb-wait", url, count=3)
    world.pipeline.run_until_done(batch_id, timeout_s=60, stop_when_waiting=True)
    world.pipeline.decide(batch_id, "rejected", "not this quarter")
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    kept = state.accepted_once_per_id()
    assert list(kept) == [f"msg_{batch_id}_awaiting-approval", f"msg_{batch_id}_rejected"]
    waiting = json.loads(kept[f"msg_{batch_id}_awaiting-approval"][0])
    assert waiting["type"] == "Voucher Batch Awaiting Approval"
    assert waiting["status"] == "awaiting-approval"
    summary = world.pipeline.result(batch_id).summary
    assert [c["state"] for c in summary["callbacks"]] == ["delivered", "delivered"]


def test_local_run_allows_loopback_http_but_not_other_plain_http(
    make_world, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    world: World = make_world()
    accepted = _request(world, "cb-loop", url.replace("127.0.0.1", "localhost"), count=1)
    world.pipeline.run_until_done(accepted, timeout_s=60)
    (delivery,) = world.pipeline.ledger.outbox.callback_deliveries(accepted)
    assert delivery.state == "delivered"
    answer = world.refused_at_the_door(
        {"requestId": "cb-far", "programName": SPRING, "callbackUrl": "http://hooks.example/x",
         "recipients": [{"email": "far@acme.example"}]}
    )  # fmt: skip
    assert any("https" in p["problem"] for p in answer["problems"])


def test_local_run_prints_the_callbacks_in_its_line_and_summary(
    tmp_path, receiver: tuple[Receiver, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = receiver
    state.down_for = 1
    request = tmp_path / "hr.json"
    request.write_text(
        json.dumps({"requestId": "cb-local-run", "partnerName": "Acme Corp", "programName": SPRING,
                    "callbackUrl": url, "recipients": [{"email": "lr@acme.example"}]}),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "out"
    code = main(["local", "run", str(request), "--out", str(out), "--timeout", "90"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["status"] == "completed"
    assert line["callbacks"] == {"delivered": 1, "pending": 0, "failed": 0}
    summary = json.loads(Path(line["results"]["summary"]).read_text(encoding="utf-8"))
    assert [a["status"] for a in summary["callbacks"][0]["attempts"]] == [503, 200]
    assert [r.answered for r in state.got] == [503, 200]
