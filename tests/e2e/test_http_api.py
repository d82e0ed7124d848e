"""The HTTP API over real HTTP against ``local up``: signed requests in, results out, and every
hostile request refused at the door with nothing queued."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from voucher_distributor.domain import standard_webhooks as sw
from voucher_distributor.domain.batches import request_batch_id
from voucher_distributor.domain.results_csv import read_results
from voucher_distributor.domain.standard_webhooks import new_secret
from voucher_distributor.models.api import Scope
from voucher_distributor_cli.local.up import LOCAL_CLIENT_ID, LocalStackUp
from voucher_distributor_cli.ops.api_clients import add_client, revoke_client
from voucher_distributor_cli.sandbox import SandboxConfig

from .conftest import CLOUD, PARTNER, SPRING, TOKEN, Receiver


@pytest.fixture(scope="module")
def up() -> Iterator[LocalStackUp]:
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2)
    with LocalStackUp(partner=PARTNER, sandbox_config=config) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(up: LocalStackUp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.endpoints()["apiUrl"], timeout=30) as client:
        yield client


def signed(
    secret: str, body: bytes, *, at: int | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """Headers the reference implementation (the ``standardwebhooks`` package) makes."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


def post(
    api: httpx.Client,
    secret: str,
    document: dict[str, Any] | bytes,
    *,
    path: str = "/v1/distributions",
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    url = httpx.URL(path, params=params) if params else path
    return api.post(
        url, content=body,
        headers={"content-type": content_type, **signed(secret, body), **(headers or {})},
    )  # fmt: skip


def wait_until_ended(
    api: httpx.Client, secret: str, status_url: str, timeout_s: float = 240
) -> dict[str, Any]:
    """Poll the status route until the batch ends. The deadline is generous: in a module's
    shared `local up` stack a small batch queues behind the work an earlier test left (a large
    batch's e-mails and their events), and on a loaded 2-core CI machine that took over 60 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = api.get(status_url, headers=signed(secret, b""))
        assert got.status_code == 200, got.text
        view = got.json()
        if view["state"] in {"completed", "failed", "rejected"}:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def results_rows(api: httpx.Client, secret: str, batch_id: str) -> list[dict[str, str]]:
    got = api.get(f"/v1/distributions/{batch_id}/results", headers=signed(secret, b""))
    assert got.status_code == 200, got.text
    data = httpx.get(got.json()["resultsUrl"]).content  # the short-lived link, no credentials
    return read_results(data)  # written with the input's delimiter (issue 25)


def people(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@example.com", "firstName": f"P{i}"} for i in range(n)]


# ------------------------------------------------------------------ the happy paths


def verified_callback(up: LocalStackUp, state: Receiver, batch_id: str) -> dict[str, Any]:
    """The batch's completion event as the receiver got it, verified with the reference
    library and the callback secret ``local up`` printed."""
    deadline = time.monotonic() + 60
    while not (accepted := [r for r in state.got if r.answered == 200]):
        assert time.monotonic() < deadline, "no callback arrived"
        time.sleep(0.2)
    (got,) = accepted
    event: dict[str, Any] = Webhook(up.endpoints()["callbackSigningSecret"]).verify(
        got.body, got.headers
    )
    assert event["batchId"] == batch_id
    assert got.headers["webhook-id"] == f"msg_{batch_id}_completed"
    return event


def test_a_signed_json_request_ends_with_a_results_link_and_a_verified_callback(
    up: LocalStackUp, api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    secret = up.client_secret
    request = {"requestId": f"hr-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("json", 5), "callbackUrl": receiver[1]}  # fmt: skip
    answer = post(api, secret, request)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["batchId"] == request_batch_id(request["requestId"])
    assert answer.headers["location"] == accepted["statusUrl"]
    view = wait_until_ended(api, secret, accepted["statusUrl"])
    assert view["state"] == "completed"
    assert view["counts"]["assigned"] == 5
    assert [p["quantity"] for p in view["purchases"]] == [5]
    rows = results_rows(api, secret, accepted["batchId"])
    assert sorted(r["status"] for r in rows) == ["assigned"] * 5
    assert all(r["voucher_code"] for r in rows)
    batch = up.batch(accepted["batchId"])
    assert batch is not None
    assert "api client local-hr" in batch.sender
    event = verified_callback(up, receiver[0], accepted["batchId"])
    assert (event["type"], event["counts"]["assigned"]) == ("Voucher Batch Completed", 5)


def test_a_signed_csv_body_with_partner_and_program_as_query(
    up: LocalStackUp, api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    secret = up.client_secret
    body = "Email,First Name\r\ncsv1@example.com,Ann\r\ncsv2@example.com,Bo\r\nnot-an-email,Cy\r\n"
    answer = post(
        api, secret, body.encode(), content_type="text/csv",
        params={"partner": PARTNER, "program": CLOUD, "callbackUrl": receiver[1]},
        headers={"Idempotency-Key": f"csv-{uuid.uuid4().hex}"},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    view = wait_until_ended(api, secret, answer.json()["statusUrl"])
    assert view["counts"] == {"rows": 3, "assigned": 2, "existing": 0, "rejected": 1, "failed": 0}
    rows = results_rows(api, secret, answer.json()["batchId"])
    assert [r["status"] for r in rows] == ["assigned", "assigned", "rejected"]
    assert {r["program"] for r in rows} == {CLOUD}
    event = verified_callback(up, receiver[0], answer.json()["batchId"])
    assert event["counts"]["rejected"] == 1


def test_holdings_show_what_a_person_holds(up: LocalStackUp, api: httpx.Client) -> None:
    secret = up.client_secret
    request = {"requestId": f"hold-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": [{"email": "Holder@Example.com"}]}  # fmt: skip
    accepted = post(api, secret, request).json()
    wait_until_ended(api, secret, accepted["statusUrl"])
    got = api.get(
        "/v1/holdings", params={"email": "holder@example.com"}, headers=signed(secret, b"")
    )
    assert got.status_code == 200, got.text
    (holding,) = got.json()["holdings"]
    assert holding["program"] == SPRING
    assert holding["holds"] is True
    assert holding["state"] == "unused"
    assert holding["voucherCode"]
    assert holding["channel"] == "request"


def test_the_same_request_again_is_the_same_batch_and_another_body_is_409(
    up: LocalStackUp, api: httpx.Client
) -> None:
    secret = up.client_secret
    request = {"requestId": f"again-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("again", 2)}  # fmt: skip
    first = post(api, secret, request)
    # A sender's retry: the same webhook-id and body, signed anew.
    second = post(api, secret, request)
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["batchId"] == first.json()["batchId"]
    assert second.json()["repeat"] is True
    changed = post(api, secret, {**request, "recipients": people("other", 2)})
    assert changed.status_code == 409
    assert changed.headers["content-type"].startswith("application/problem+json")
    assert "different body" in changed.json()["detail"]
    view = wait_until_ended(api, secret, first.json()["statusUrl"])
    assert view["counts"]["assigned"] == 2  # bought once


def test_webhook_id_is_the_key_of_last_resort(up: LocalStackUp, api: httpx.Client) -> None:
    secret = up.client_secret
    body = json.dumps({"programName": SPRING, "recipients": people("wid", 1)}).encode()
    headers = {"content-type": "application/json", **signed(secret, body, msg_id="msg_retry_me")}
    first = api.post("/v1/distributions", content=body, headers=headers)
    again = api.post("/v1/distributions", content=body, headers=headers)  # the sender's retry
    assert first.status_code == again.status_code == 202, first.text
    assert first.json()["requestId"] == "msg_retry_me"
    assert again.json() == {**first.json(), "repeat": True}


def test_approve_over_the_api(api: httpx.Client, up: LocalStackUp) -> None:
    secret = up.client_secret
    request = {"requestId": f"big-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("big", 3)}  # fmt: skip
    accepted = post(api, secret, request).json()
    wait_for_state(api, secret, accepted["statusUrl"], {"completed", "awaiting-approval"})
    # The default ApprovalThreshold (5,000) lets three through; a missing batch is 404 and
    # a batch not waiting is 409, each as a problem.
    missing = post(api, secret, {"note": "ok"}, path="/v1/distributions/r-nope/approve")
    assert missing.status_code == 404
    not_waiting = post(
        api, secret, {"note": "ok"}, path=f"/v1/distributions/{accepted['batchId']}/approve"
    )
    assert not_waiting.status_code == 409
    assert "not awaiting approval" in not_waiting.json()["detail"]


def wait_for_state(api: httpx.Client, secret: str, url: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        view = api.get(url, headers=signed(secret, b"")).json()
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_a_callback_receiver_down_at_first_gets_the_event_once_verified(
    up: LocalStackUp, api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    """The integrator's receiver answers 503 twice, then 200: the event still arrives, one
    ``webhook-id`` after deduplication, signed with the callback secret local up printed."""
    state, url = receiver
    state.down_for = 2
    secret = up.client_secret
    request = {"requestId": f"cb-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("cb", 2), "callbackUrl": url}  # fmt: skip
    accepted = post(api, secret, request).json()
    wait_until_ended(api, secret, accepted["statusUrl"])
    deadline = time.monotonic() + 60
    while not any(r.answered == 200 for r in state.got):
        assert time.monotonic() < deadline, [r.answered for r in state.got]
        time.sleep(0.2)
    assert [r.answered for r in state.got] == [503, 503, 200]
    kept = state.accepted_once_per_id()
    assert list(kept) == [f"msg_{accepted['batchId']}_completed"]
    callback_secret = up.endpoints()["callbackSigningSecret"]
    for r in state.got:  # every attempt is signed, and verifies with the reference library
        event = Webhook(callback_secret).verify(r.body, r.headers)
        assert event["batchId"] == accepted["batchId"]
    view = api.get(accepted["statusUrl"], headers=signed(secret, b"")).json()
    (delivery,) = view["callbacks"]
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [503, 503, 200]
    assert "token" not in delivery["url"]  # the query string (a secret, often) is not shown


# ------------------------------------------------------------------ hostile requests


@pytest.fixture(scope="module")
def reader(up: LocalStackUp) -> str:
    return str(add_client(up.target(), "helpdesk", scopes=[Scope.READ])["secret"])


@pytest.fixture(scope="module")
def bearer(up: LocalStackUp) -> str:
    added = add_client(up.target(), "personio", scopes=[Scope.SUBMIT, Scope.READ], bearer=True)
    return str(added["bearerToken"])


def _hostile_cases(
    up: LocalStackUp, reader: str
) -> list[tuple[str, int, dict[str, str], bytes, str]]:
    secret = up.client_secret
    ok = json.dumps(
        {"requestId": "hostile", "programName": SPRING, "recipients": people("h", 1)}
    ).encode()
    json_type = {"content-type": "application/json"}
    stale = int(time.time()) - 301
    tampered = signed(secret, ok)
    return [
        ("unsigned", 401, json_type, ok, "sign the request"),
        ("stale", 401, {**json_type, **signed(secret, ok, at=stale)}, ok, "too old"),
        (
            "future",
            401,
            {**json_type, **signed(secret, ok, at=int(time.time()) + 400)},
            ok,
            "future",
        ),
        (
            "wrong secret",
            401,
            {**json_type, **signed(new_secret(), ok)},
            ok,
            "matches no API client",
        ),
        ("tampered body", 401, {**json_type, **tampered}, ok.replace(b"h0@", b"x0@"), "matches no"),
        (
            "no webhook-id",
            401,
            {**json_type, "webhook-timestamp": "1", "webhook-signature": "v1,x"},
            ok,
            "webhook-id",
        ),
        (
            "unknown bearer",
            401,
            {**json_type, "authorization": "Bearer " + "x" * 40},
            ok,
            "bearer token",
        ),
        ("read-only client", 403, {**json_type, **signed(reader, ok)}, ok, "'submit' scope"),
        ("not JSON", 400, {**json_type, **signed(secret, b"{oops")}, b"{oops", "not JSON"),
        ("a JSON list", 400, {**json_type, **signed(secret, b"[]")}, b"[]", "JSON object"),
        (
            "XML",
            415,
            {"content-type": "application/xml", **signed(secret, b"<a/>")},
            b"<a/>",
            "text/csv",
        ),
    ]


def test_hostile_requests_get_their_status_and_nothing_is_queued(
    up: LocalStackUp, api: httpx.Client, reader: str
) -> None:
    request_queue = up.endpoints()["requestQueueUrl"]
    with up.deliveries_held():
        before = up._running().stack.queue_counts(request_queue).total
        for name, status, headers, body, says in _hostile_cases(up, reader):
            got = api.post("/v1/distributions", content=body, headers=headers)
            assert got.status_code == status, (name, got.text)
            assert got.headers["content-type"].startswith("application/problem+json"), name
            problem = got.json()
            assert problem["status"] == status
            assert says in problem["detail"], (name, problem)
            assert "Traceback" not in got.text
        assert up._running().stack.queue_counts(request_queue).total == before


def test_invalid_requests_list_every_problem(up: LocalStackUp, api: httpx.Client) -> None:
    secret = up.client_secret
    request_queue = up.endpoints()["requestQueueUrl"]
    with up.deliveries_held():
        before = up._running().stack.queue_counts(request_queue).total
        bad = post(api, secret, {"requestId": 5, "recipients": "nobody", "callbackUrl": "ftp://x"})
        assert bad.status_code == 422
        fields = {p["field"] for p in bad.json()["problems"]}
        assert {"requestId", "recipients", "callbackUrl"} <= fields
        # Issue 23 item 3: a request that names nobody (no list, or an empty one) is refused.
        for body in ({"requestId": "nobody"}, {"requestId": "nobody-2", "recipients": []}):
            nobody = post(api, secret, body)
            assert nobody.status_code == 422
            assert nobody.headers["content-type"].startswith("application/problem+json")
            assert [p["field"] for p in nobody.json()["problems"]] == ["recipients"]
            assert "recipientsS3Uri" in nobody.json()["problems"][0]["problem"]
        csv_bad = post(api, secret, b"name\r\nAnn\r\n", content_type="text/csv",
                       headers={"Idempotency-Key": "k-1"})  # fmt: skip
        assert csv_bad.status_code == 422
        assert "no e-mail column" in csv_bad.text
        no_key = post(api, secret, b"email\r\na@example.com\r\n", content_type="text/csv")
        assert no_key.status_code == 202  # the webhook-id is the key
        too_big = post(api, secret, b"email\r\n" + b"a@example.com\r\n" * 300_000,
                       content_type="text/csv", headers={"Idempotency-Key": "k-2"})  # fmt: skip
        assert too_big.status_code == 413
        assert up._running().stack.queue_counts(request_queue).total == before + 1


def test_a_bearer_client_and_revocation(up: LocalStackUp, api: httpx.Client, bearer: str) -> None:
    request = {"requestId": f"bearer-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("bearer", 1)}  # fmt: skip
    headers = {"authorization": f"Bearer {bearer}"}
    got = api.post("/v1/distributions", json=request, headers=headers)
    assert got.status_code == 202, got.text
    # Another client may not reuse its key, even with the same body.
    stolen = post(api, up.client_secret, request)
    assert stolen.status_code == 409
    assert "another API client" in stolen.json()["detail"]
    revoke_client(up.target(), "personio")
    deadline = time.monotonic() + 90  # the API re-reads its clients within a minute
    while (again := api.get(got.json()["statusUrl"], headers=headers)).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert "bearer token" in again.json()["detail"]
    # The other clients are untouched.
    ok = api.get(got.json()["statusUrl"], headers=signed(up.client_secret, b""))
    assert ok.status_code == 200


def test_unknown_routes_and_batches_are_problems(up: LocalStackUp, api: httpx.Client) -> None:
    secret = up.client_secret
    assert api.get("/v1/nothing", headers=signed(secret, b"")).status_code == 404
    missing = api.get("/v1/distributions/r-missing", headers=signed(secret, b""))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    holdings = api.get("/v1/holdings", headers=signed(secret, b""))
    assert holdings.status_code == 422


def test_local_client_id(up: LocalStackUp) -> None:
    line = up.endpoints()
    assert line["apiClientId"] == LOCAL_CLIENT_ID
    assert line["apiClientSecret"].startswith("whsec_")
    assert {"endpointUrl", "region", "stack", "bucket", "requestQueueUrl", "table", "apiUrl",
            "callbackSigningSecret", "certiverseUrl"} <= set(line)  # fmt: skip


def test_a_csv_body_is_read_as_an_upload_would_be(up: LocalStackUp, api: httpx.Client) -> None:
    """An Excel export in Windows-1252 with ';' and German headers is taken as from the bucket;
    a workbook sent as text/csv is refused with the reader's own words."""
    secret = up.client_secret
    excel = "E-Mail-Adresse;Vorname\r\njuergen@example.com;Jürgen\r\n".encode("cp1252")
    # The signature covers the bytes as sent (the reference library signs text only).
    headers = sw.headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), excel)
    headers["content-type"] = "text/csv; charset=windows-1252"
    answer = api.post("/v1/distributions", content=excel, params={"program": SPRING},
                      headers=headers)  # fmt: skip
    assert answer.status_code == 202, answer.text
    view = wait_until_ended(api, secret, answer.json()["statusUrl"])
    rows = results_rows(api, secret, view["batchId"])
    assert [(r["email"], r["first_name"], r["status"]) for r in rows] == [
        ("juergen@example.com", "Jürgen", "assigned")
    ]
    link = api.get(f"/v1/distributions/{view['batchId']}/results", headers=signed(secret, b""))
    assert httpx.get(link.json()["resultsUrl"]).content.startswith(b"\xef\xbb\xbfrow;line;")
    workbook = b"PK\x03\x04" + b"\0" * 64
    refused = post(api, secret, workbook, content_type="text/csv",
                   headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
    assert refused.status_code == 422
    assert "Excel workbook" in refused.json()["problems"][0]["problem"]


def test_a_failed_request_is_retried_where_it_was_sent_and_hr_hears_of_it(
    up: LocalStackUp, api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    """Issue 23 item 7: a request that failed (Certiverse refused the token) is retried by
    ``POST /v1/distributions/{id}/retry``: the original links the retry and shows its counts,
    and the retry's completion reaches the original's callbackUrl under its requestId."""
    state, url = receiver
    secret = up.client_secret
    assert up.sandbox is not None
    request_id = f"hr-retry-{uuid.uuid4().hex}"
    request = {"requestId": request_id, "programName": SPRING,
               "recipients": people("rt", 3), "callbackUrl": url}  # fmt: skip
    up.sandbox.set_token("rotated-during-the-outage")
    try:
        accepted = post(api, secret, request).json()
        failed = wait_until_ended(api, secret, accepted["statusUrl"])
    finally:
        up.sandbox.set_token(TOKEN)
    assert failed["state"] == "failed"
    assert failed["counts"]["failed"] == 3
    original = accepted["batchId"]

    answer = post(api, secret, b"", path=f"/v1/distributions/{original}/retry")
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["retryOf"] == original
    assert started["rows"] == 3
    assert answer.headers["location"] == started["statusUrl"]
    retry_view = wait_until_ended(api, secret, started["statusUrl"])
    assert retry_view["state"] == "completed"
    assert retry_view["retryOf"] == original

    view = api.get(accepted["statusUrl"], headers=signed(secret, b"")).json()
    (retry,) = view["retries"]
    assert retry["batchId"] == started["batchId"]
    assert retry["state"] == "completed"
    assert retry["counts"]["assigned"] == 3
    # The retry's completion, at the original request's callbackUrl, under its requestId.
    deadline = time.monotonic() + 60
    want = f"msg_{started['batchId']}_completed"
    while want not in state.accepted_once_per_id():
        assert time.monotonic() < deadline, [r.headers.get("webhook-id") for r in state.got]
        time.sleep(0.2)
    (got,) = [r for r in state.got if r.answered == 200 and r.headers["webhook-id"] == want]
    event = Webhook(up.endpoints()["callbackSigningSecret"]).verify(got.body, got.headers)
    assert event["type"] == "Voucher Batch Completed"
    assert (event["requestId"], event["retryOf"]) == (request_id, original)
    assert event["counts"]["assigned"] == 3

    # Not retryable: unknown, or nothing failed any more.
    assert post(api, secret, b"", path="/v1/distributions/f-nope/retry").status_code == 404
    again = post(api, secret, b"", path=f"/v1/distributions/{started['batchId']}/retry")
    assert again.status_code == 409
    assert "no failed rows" in again.json()["detail"]


def test_issue25_8_a_dry_run_says_what_it_would_buy_and_12_whole_second_times(
    up: LocalStackUp, api: httpx.Client
) -> None:
    """A dry run's status counts ``wouldAssign`` and shows its purchases as ``would-buy``
    (never ``PENDING``); every time in it is whole seconds with ``Z``. ``"dryRun": "yes"`` is
    no dry run: 422, naming the field."""
    secret = up.client_secret
    request = {"requestId": f"dry-{uuid.uuid4().hex}", "programName": SPRING,
               "recipients": people("dry", 3), "dryRun": True}  # fmt: skip
    answer = post(api, secret, request)
    assert answer.status_code == 202, answer.text
    view = wait_until_ended(api, secret, answer.json()["statusUrl"])
    assert view["dryRun"] is True
    assert view["counts"]["wouldAssign"] == 3
    assert view["counts"]["assigned"] == 0
    assert [(p["state"], p["quantity"], p["purchaseCode"]) for p in view["purchases"]] == [
        ("would-buy", 3, None)
    ]
    for moment in (view["createdAt"], view["finishedAt"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", moment), moment

    yes = post(api, secret, {**request, "requestId": f"yes-{uuid.uuid4().hex}", "dryRun": "yes"})
    assert yes.status_code == 422, yes.text
    assert {p["field"] for p in yes.json()["problems"]} == {"dryRun"}
