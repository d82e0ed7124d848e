"""Many partners on one stack, over real HTTP against ``local up``: two HR systems bound to two
partners each reach only their own; an operator's client sees both; approval is someone
else's; results come as JSON pages and in the callback; a request cannot point at another
batch's results; a signature is good for the one request it signed."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from voucher_distributor.domain.batches import request_batch_id
from voucher_distributor.models.api import Scope
from voucher_distributor_cli.local.up import LocalStackUp
from voucher_distributor_cli.ops.api_clients import add_client, list_clients, update_client
from voucher_distributor_cli.sandbox import SandboxConfig

from .conftest import SPRING, TOKEN, Receiver
from .test_http_api import people, post, signed, wait_for_state, wait_until_ended

ACME = "Acme Corp"
GLOBEX = "Globex Learning"
#: A batch over this many vouchers waits for approval.
THRESHOLD = 1000


@pytest.fixture(scope="module")
def logs() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def up(logs: io.StringIO) -> Iterator[LocalStackUp]:
    config = SandboxConfig(token=TOKEN, generation_delay_s=0.2)
    with LocalStackUp(
        sandbox_config=config,
        parameters={"ApprovalThreshold": str(THRESHOLD)},
        log_stream=logs,
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(up: LocalStackUp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.endpoints()["apiUrl"], timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def secrets(up: LocalStackUp) -> dict[str, str]:
    """Four clients: one HR system per partner, Acme's approver, and an operator's tool."""
    target = up.target()
    every = [Scope.SUBMIT, Scope.READ, Scope.APPROVE]
    return {
        "acme": add_client(target, "acme-hr", scopes=every, partners=[ACME])["secret"],
        "approver": add_client(
            target, "acme-approver", scopes=[Scope.READ, Scope.APPROVE], partners=[ACME]
        )["secret"],
        "globex": add_client(target, "globex-lms", scopes=every, partners=[GLOBEX])["secret"],
        "ops": add_client(target, "ops-desk", scopes=[Scope.READ], all_partners=True)["secret"],
    }


def get(api: httpx.Client, secret: str, path: str, **params: str) -> httpx.Response:
    url = httpx.URL(path, params=params) if params else path
    return api.get(url, headers=signed(secret, b""))


def submit(
    api: httpx.Client, secret: str, partner: str, prefix: str, n: int = 2, **extra: Any
) -> dict[str, Any]:
    request = {"requestId": f"{prefix}-{uuid.uuid4().hex}", "partnerName": partner,
               "programName": SPRING, "recipients": people(prefix, n), **extra}  # fmt: skip
    answer = post(api, secret, request)
    assert answer.status_code == 202, answer.text
    accepted: dict[str, Any] = answer.json()
    return accepted


@pytest.fixture(scope="module")
def batches(api: httpx.Client, secrets: dict[str, str]) -> dict[str, dict[str, Any]]:
    """One completed batch per partner, each submitted by its own client."""
    acme = submit(api, secrets["acme"], ACME, "acme")
    globex = submit(api, secrets["globex"], GLOBEX, "globex")
    wait_until_ended(api, secrets["acme"], acme["statusUrl"])
    wait_until_ended(api, secrets["globex"], globex["statusUrl"])
    return {"acme": acme, "globex": globex}


# ------------------------------------------------------------------ each to its own


def test_each_client_submits_and_reads_its_own(
    api: httpx.Client, secrets: dict[str, str], batches: dict[str, dict[str, Any]]
) -> None:
    for name, partner, client_id in (("acme", ACME, "acme-hr"), ("globex", GLOBEX, "globex-lms")):
        batch_id = batches[name]["batchId"]
        view = get(api, secrets[name], f"/v1/distributions/{batch_id}").json()
        assert view["state"] == "completed"
        assert view["counts"]["assigned"] == 2
        assert (view["channel"], view["submittedBy"]) == ("api", client_id)
        assert view["partners"] == [partner]
        assert get(api, secrets[name], f"/v1/distributions/{batch_id}/results").status_code == 200
        rows = get(api, secrets[name], f"/v1/distributions/{batch_id}/assignments").json()
        assert [r["status"] for r in rows["assignments"]] == ["assigned", "assigned"]
        assert all(r["voucherCode"] and r["expiresUtc"] for r in rows["assignments"])
        assert rows["nextLink"] is None


def test_neither_can_read_approve_or_look_up_the_others(
    api: httpx.Client,
    secrets: dict[str, str],
    batches: dict[str, dict[str, Any]],
    logs: io.StringIO,
) -> None:
    never = get(api, secrets["acme"], "/v1/distributions/r-never-was")
    assert never.status_code == 404
    for reader, other in (("acme", "globex"), ("globex", "acme")):
        batch_id = batches[other]["batchId"]
        for path in ("", "/results", "/assignments"):
            got = get(api, secrets[reader], f"/v1/distributions/{batch_id}{path}")
            assert got.status_code == 404, (reader, path, got.text)
            # exactly as for an id that never existed: ids cannot be probed
            assert got.json()["detail"] == never.json()["detail"].replace("r-never-was", batch_id)
        approve = post(api, secrets[reader], {}, path=f"/v1/distributions/{batch_id}/approve")
        assert approve.status_code == 404
        # nor ask its codes mailed again, nor retry it: the batch does not exist for them
        resend = post(api, secrets[reader], {"row": 2}, path=f"/v1/distributions/{batch_id}/resend")
        assert resend.status_code == 404, resend.text
        retry = post(api, secrets[reader], {}, path=f"/v1/distributions/{batch_id}/retry")
        assert retry.status_code == 404, retry.text
    # holdings: each sees only the people's vouchers in its own partners
    acme_person = "acme0@example.com"
    mine = get(api, secrets["acme"], "/v1/holdings", email=acme_person).json()["holdings"]
    assert [h["partner"] for h in mine] == [ACME]
    assert get(api, secrets["globex"], "/v1/holdings", email=acme_person).json()["holdings"] == []
    # each refusal counted, with the client's id and no address in the log
    text = logs.getvalue()
    assert "ApiRequestsDenied" in text
    assert "API client globex-lms denied (404)" in text
    denied_lines = [line for line in text.splitlines() if "denied (" in line]
    assert denied_lines
    assert not any("@" in line for line in denied_lines)


def test_submitting_for_the_other_partner_is_403_and_nothing_is_queued(
    up: LocalStackUp, api: httpx.Client, secrets: dict[str, str]
) -> None:
    request_queue = up.endpoints()["requestQueueUrl"]
    with up.deliveries_held():
        before = up._running().stack.queue_counts(request_queue).total
        refused = post(api, secrets["acme"], {"requestId": f"x-{uuid.uuid4().hex}",
                       "partnerName": GLOBEX, "programName": SPRING,
                       "recipients": people("x", 1)})  # fmt: skip
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert f"partner '{GLOBEX}'" in refused.json()["detail"]
        # a CSV body whose partner column names the other partner on one row
        body = f"email,partner_name\r\na@example.com,{ACME}\r\nb@example.com,{GLOBEX}\r\n"
        key = {"Idempotency-Key": uuid.uuid4().hex}
        mixed = post(api, secrets["acme"], body.encode(), content_type="text/csv",
                     params={"program": SPRING}, headers=key)  # fmt: skip
        assert mixed.status_code == 403, mixed.text
        assert GLOBEX in mixed.json()["detail"]
        # naming no partner at all (no stack default): a bound client must say which
        unnamed = post(api, secrets["acme"], {"requestId": f"n-{uuid.uuid4().hex}",
                       "programName": SPRING, "recipients": people("n", 1)})  # fmt: skip
        assert unnamed.status_code == 403
        assert "name the partner" in unnamed.json()["detail"]
        assert up._running().stack.queue_counts(request_queue).total == before


def test_a_client_with_all_partners_sees_both(
    api: httpx.Client, secrets: dict[str, str], batches: dict[str, dict[str, Any]]
) -> None:
    for name in ("acme", "globex"):
        got = get(api, secrets["ops"], f"/v1/distributions/{batches[name]['batchId']}")
        assert got.status_code == 200, got.text
    held = get(api, secrets["ops"], "/v1/holdings", email="globex1@example.com").json()
    assert [h["partner"] for h in held["holdings"]] == [GLOBEX]


def test_list_shows_partners_and_update_narrows(up: LocalStackUp, secrets: dict[str, str]) -> None:
    target = up.target()
    listed = {c["clientId"]: c for c in list_clients(target)}
    assert listed["acme-hr"]["partners"] == [ACME]
    assert listed["ops-desk"]["partners"] == "all"
    add_client(target, "legacy-hr", scopes=[Scope.READ])  # as written before partners
    legacy = {c["clientId"]: c for c in list_clients(target)}["legacy-hr"]
    assert legacy["unbound"] is True
    assert "update" in legacy["partners"]
    narrowed = update_client(target, "legacy-hr", partners=[GLOBEX], programs=[SPRING])
    assert (narrowed["partners"], narrowed["programs"]) == ([GLOBEX], [SPRING])
    again = {c["clientId"]: c for c in list_clients(target)}["legacy-hr"]
    assert "unbound" not in again


# ------------------------------------------------------------------ approval and paging


def test_the_submitter_may_not_approve_and_assignments_page_through_1200_rows(
    up: LocalStackUp, api: httpx.Client, secrets: dict[str, str]
) -> None:
    body = "email\r\n" + "".join(f"big{i}@example.com\r\n" for i in range(1200))
    # Not mailed (?sendEmail=false): mailing is test_email's subject, and in this module's
    # shared stack 1,200 e-mails and their SES events held the next test up by over 2 minutes.
    answer = post(api, secrets["acme"], body.encode(), content_type="text/csv",
                  params={"partner": ACME, "program": SPRING, "sendEmail": "false"},
                  headers={"Idempotency-Key": f"big-{uuid.uuid4().hex}"})  # fmt: skip
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    view = wait_for_state(api, secrets["acme"], accepted["statusUrl"], {"awaiting-approval"})
    assert view["submittedBy"] == "acme-hr"
    path = f"/v1/distributions/{accepted['batchId']}/approve"
    own = post(api, secrets["acme"], {"note": "mine"}, path=path)
    assert own.status_code == 403, own.text
    assert "ApprovalBySubmitter" in own.json()["detail"]
    assert post(api, secrets["globex"], {}, path=path).status_code == 404
    approved = post(api, secrets["approver"], {"note": "checked"}, path=path)
    assert approved.status_code == 200, approved.text
    assert approved.json()["by"] == "api:acme-approver"
    wait_until_ended(api, secrets["acme"], accepted["statusUrl"], timeout_s=180)
    rows: list[dict[str, Any]] = []
    link: str | None = f"/v1/distributions/{accepted['batchId']}/assignments"
    pages = 0
    while link:
        got = api.get(link, headers=signed(secrets["approver"], b""))
        assert got.status_code == 200, got.text
        page = got.json()
        rows += page["assignments"]
        link = page["nextLink"]
        pages += 1
    assert pages == 3  # 500, 500, 200
    assert [r["row"] for r in rows] == list(range(1, 1201))
    assert {r["status"] for r in rows} == {"assigned"}
    assert len({r["voucherCode"] for r in rows}) == 1200
    assert all(r["expiresUtc"] and r["purchaseCode"] for r in rows)
    small = get(api, secrets["acme"], f"/v1/distributions/{accepted['batchId']}/assignments",
                pageSize="1000").json()  # fmt: skip
    assert len(small["assignments"]) == 1000
    assert "pageSize=1000" in small["nextLink"]
    bad = get(api, secrets["acme"], f"/v1/distributions/{accepted['batchId']}/assignments",
              page="12.99999")  # fmt: skip
    assert bad.status_code == 422  # no such row: a token it never gave


def test_the_completion_callback_carries_results_and_assignments_links(
    up: LocalStackUp, api: httpx.Client, secrets: dict[str, str], receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    accepted = submit(api, secrets["globex"], GLOBEX, "cb", callbackUrl=url)
    wait_until_ended(api, secrets["globex"], accepted["statusUrl"])
    deadline = time.monotonic() + 120
    while not (got := [r for r in state.got if r.answered == 200]):
        assert time.monotonic() < deadline, "no callback arrived"
        time.sleep(0.2)
    event = Webhook(up.endpoints()["callbackSigningSecret"]).verify(got[0].body, got[0].headers)
    assert event["type"] == "Voucher Batch Completed"
    results = httpx.get(event["resultsUrl"])  # the short-lived link, no credentials
    assert results.status_code == 200
    assert "cb0@example.com" in results.text
    assert event["assignmentsUrl"].startswith(up.endpoints()["apiUrl"])
    rows = api.get(event["assignmentsUrl"], headers=signed(secrets["globex"], b"")).json()
    assert len(rows["assignments"]) == 2
    # the link obeys the partner rule too
    other = api.get(event["assignmentsUrl"], headers=signed(secrets["acme"], b""))
    assert other.status_code == 404


# ------------------------------------------------------------------ what a request may point at


def test_a_recipients_uri_naming_another_batchs_results_is_refused(
    up: LocalStackUp, api: httpx.Client, secrets: dict[str, str], batches: dict[str, dict[str, Any]]
) -> None:
    bucket = up.endpoints()["bucket"]
    other = up.batch(batches["globex"]["batchId"])
    assert other is not None
    target_uri = f"s3://{bucket}/{other.results_csv_key}"
    # Over the API: refused whole, whatever it names (a CSV body is the way to send a file).
    over_api = post(api, secrets["acme"], {"requestId": f"u-{uuid.uuid4().hex}",
                    "partnerName": ACME, "programName": SPRING, "dryRun": True,
                    "recipientsS3Uri": target_uri})  # fmt: skip
    assert over_api.status_code == 422, over_api.text
    assert over_api.json()["problems"][0]["field"] == "recipientsS3Uri"
    # On the queue: only incoming/ and requests/ are read; the refusal says so.
    request_id = f"queue-{uuid.uuid4().hex}"
    sqs = up._running().stack.client("sqs")
    sqs.send_message(
        QueueUrl=up.endpoints()["requestQueueUrl"],
        MessageBody=json.dumps(
            {
                "requestId": request_id,
                "partnerName": ACME,
                "programName": SPRING,
                "dryRun": True,
                "recipientsS3Uri": target_uri,
            }
        ),
    )
    batch_id = request_batch_id(request_id, dry_run=True)
    deadline = time.monotonic() + 60
    while (batch := up.batch(batch_id)) is None or batch.status.value != "FAILED":
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    assert "incoming/" in (batch.error or "")
    assert "requests/" in (batch.error or "")
    assert batch.channel == "queue"
    view = get(api, secrets["ops"], f"/v1/distributions/{batch_id}").json()
    assert view["counts"]["rows"] == 0


# ------------------------------------------------------------------ signatures


def test_a_signature_is_good_for_the_one_request_it_signed(
    up: LocalStackUp, api: httpx.Client, secrets: dict[str, str], batches: dict[str, dict[str, Any]]
) -> None:
    secret = secrets["acme"]
    status = f"/v1/distributions/{batches['acme']['batchId']}"
    captured = signed(secret, b"")
    assert api.get(status, headers=captured).status_code == 200
    # the same request again is answered as before
    assert api.get(status, headers=captured).status_code == 200
    # an empty-body signature replayed as an approval, or with another query
    for replay in (
        api.post(f"{status}/approve", content=b"", headers=captured),
        api.get(httpx.URL(status, params={"x": "1"}), headers=captured),
        api.get(f"{status}/assignments", headers=captured),
    ):
        assert replay.status_code == 401, replay.text
        assert "replayed" in replay.json()["detail"]
    # a CSV dry run replayed with dryRun=false and another callback
    body = b"email\r\nreplay@example.com\r\n"
    headers = {"content-type": "text/csv", **signed(secret, body)}
    query = {"partner": ACME, "program": SPRING, "dryRun": "true"}
    first = api.post(httpx.URL("/v1/distributions", params=query), content=body, headers=headers)
    assert first.status_code == 202, first.text
    bought = {**query, "dryRun": "false", "callbackUrl": "https://elsewhere.example/hook"}
    replay = api.post(httpx.URL("/v1/distributions", params=bought), content=body, headers=headers)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["detail"]
