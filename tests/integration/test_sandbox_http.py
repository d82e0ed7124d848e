"""The Certiverse sandbox over real HTTP: the API document's rules, pagination, faults, CLI.

Raw httpx on loopback, so these tests check the wire (status codes, headers, JSON shapes) that
any client sees, not the sandbox's Python internals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from voucher_distributor.models.certiverse import (
    PartnerVoucherModel,
    PartnerVoucherPurchaseModel,
)
from voucher_distributor_cli.sandbox import (
    CatalogError,
    FaultSettings,
    SandboxConfig,
    SandboxServer,
    load_catalog,
)

TOKEN = "sandbox-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPRING = "Spring Certification Drive"
CLOUD = "Cloud Fundamentals Exam Vouchers"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, timeout=5.0) as client:
        yield client


def wait_until(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll with short sleeps until ``check()`` is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


def buy(api: httpx.Client, quantity: int = 3, **overrides: Any) -> dict[str, Any]:
    body = {"notes": "batch-1", "partnerName": "Acme Corp", "programName": SPRING}
    body["quantity"] = quantity
    body.update(overrides)
    response = api.post("/vouchers/purchases", json=body)
    assert response.status_code == 200, response.text
    purchase: dict[str, Any] = response.json()
    return purchase


def purchase_status(api: httpx.Client, code: str) -> str:
    data = api.get("/vouchers/purchases", params={"purchaseCode": code}).json()["data"]
    assert len(data) == 1
    return str(data[0]["status"])


def codes_of(api: httpx.Client, code: str) -> list[dict[str, Any]]:
    pages = follow_all(api, "/vouchers", {"purchaseCode": code})
    return [item for page in pages for item in page.json()["data"]]


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["data"]]


def follow_all(api: httpx.Client, path: str, params: dict[str, str]) -> list[httpx.Response]:
    """Every page of a listing, following ``nextLink`` as the client would."""
    pages = [api.get(path, params=params)]
    while "nextLink" in pages[-1].json():
        link = pages[-1].json()["nextLink"]
        pages.append(api.get(httpx.URL(api.base_url).join(link)))
    return pages


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_validation_error(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status"] == 400
    assert "title" in body
    assert field in body["errors"], body
    return body


# ----------------------------------------------------------------------------- auth


def test_requests_without_or_with_a_wrong_token_get_401(sandbox: SandboxServer) -> None:
    url = sandbox.base_url + "/vouchers/programs"
    missing = httpx.get(url)
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token"})
    basic = httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"})
    empty = httpx.get(url, headers={"Authorization": "Bearer"})
    for response in (missing, wrong, basic, empty):
        assert response.status_code == 401
        assert response.json()["status"] == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_token_can_be_rotated_and_revoked_at_runtime(sandbox: SandboxServer) -> None:
    url = sandbox.base_url + "/vouchers/programs"
    sandbox.set_token("rotated")
    assert httpx.get(url, headers=AUTH).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer rotated"}).status_code == 200
    sandbox.set_token("")
    assert httpx.get(url, headers={"Authorization": "Bearer x"}).status_code == 401
    control = httpx.put(sandbox.root_url + "/_sandbox/token", json={"token": TOKEN})
    assert control.status_code == 200
    assert httpx.get(url, headers=AUTH).status_code == 200


# ----------------------------------------------------------------------------- partners


def test_partners_filter_by_partial_name_and_status(api: httpx.Client) -> None:
    assert names(api.get("/vouchers/partners", params={"partnerName": "acme"})) == [
        "Acme Corp",
        "Acme Corporation",
    ]
    # The exact name of one partner still matches both: partial match is the documented trap.
    assert len(names(api.get("/vouchers/partners", params={"partnerName": "Acme Corp"}))) == 2
    assert names(api.get("/vouchers/partners", params={"status": "archived"})) == [
        "Umbrella Academy"
    ]
    assert names(api.get("/vouchers/partners", params={"status": "Inactive"})) == [
        "Initech Training"
    ]
    active = api.get("/vouchers/partners", params={"status": "ACTIVE", "partnerName": "o"})
    assert names(active) == ["Acme Corp", "Acme Corporation"]  # first page of 2
    assert "nextLink" in active.json()
    assert (
        names(api.get("/vouchers/partners", params={"partnerName": "acme", "status": "Inactive"}))
        == []
    )


def test_partner_shape_is_the_documented_one(api: httpx.Client) -> None:
    partner = api.get("/vouchers/partners", params={"partnerName": "Globex"}).json()["data"][0]
    assert set(partner) == {"id", "isActive", "isArchived", "name", "users"}
    assert set(partner["users"][0]) == {"email", "isActive", "status"}


def test_invalid_partner_status_is_a_400(api: httpx.Client) -> None:
    assert_validation_error(api.get("/vouchers/partners", params={"status": "Deleted"}), "status")


# ----------------------------------------------------------------------------- programs


def test_programs_filter_by_partial_name(api: httpx.Client) -> None:
    spring = api.get("/vouchers/programs", params={"programName": "spring certification drive"})
    assert names(spring) == [SPRING, f"{SPRING} 2027"]
    cloud = api.get("/vouchers/programs", params={"programName": "CLOUD"})
    assert names(cloud) == [CLOUD]
    program = cloud.json()["data"][0]
    assert program["voucherCodePrefix"] == "CLDF-"
    assert program["partners"]["partnerCostPerVoucher"] == 0  # a JSON number, as .NET sends it
    assert isinstance(program["discounts"][0]["percent"], float)
    assert {"storeExams", "restrictions", "expirationPeriodInDays", "isInactive"} <= set(program)


def test_unknown_query_parameters_are_ignored_and_names_are_case_insensitive(
    api: httpx.Client,
) -> None:
    response = api.get("/vouchers/programs", params={"ProgramName": "cloud", "foo": "bar"})
    assert names(response) == [CLOUD]


# ----------------------------------------------------------------------------- purchases list


@pytest.mark.parametrize(
    "params",
    [{}, {"page": "1"}, {"partnerName": ""}, {"status": "  "}, {"unknown": "x"}],
)
def test_purchases_need_at_least_one_filter(api: httpx.Client, params: dict[str, str]) -> None:
    assert_validation_error(api.get("/vouchers/purchases", params=params), "filter")


def test_purchases_reject_invalid_status_and_email(api: httpx.Client) -> None:
    assert_validation_error(api.get("/vouchers/purchases", params={"status": "Done"}), "status")
    bad_email = api.get("/vouchers/purchases", params={"purchasedByEmail": "not-an-email"})
    assert_validation_error(bad_email, "purchasedByEmail")


def test_purchase_filters(api: httpx.Client, sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(generation_delay_s=30))  # both stay in VoucherCreation
    first = buy(api, 1, partnerName="Acme Corp")
    second = buy(api, 1, partnerName="acme corporation", programName=CLOUD)
    assert second["partnerName"] == "Acme Corporation"  # canonical names in the record
    assert second["programName"] == CLOUD

    def codes(**params: str) -> list[str]:
        response = api.get("/vouchers/purchases", params=params)
        assert response.status_code == 200, response.text
        return [p["voucherPurchaseCode"] for p in response.json()["data"]]

    both = [first["voucherPurchaseCode"], second["voucherPurchaseCode"]]
    assert codes(partnerName="acme") == both
    assert codes(partnerName="Acme Corp") == both  # partial match again
    assert codes(programName="cloud") == [second["voucherPurchaseCode"]]
    assert codes(purchaseCode=first["voucherPurchaseCode"].lower()) == both[:1]
    assert codes(purchaseCode=first["voucherPurchaseCode"][:-1]) == []  # exact, not partial
    assert codes(purchasedByEmail=sandbox.config.api_user_email) == both
    assert codes(purchasedByEmail="someone@example.com") == []
    assert codes(status="voucherCreation") == both
    assert codes(status="Complete") == []
    assert codes(status="complete", partnerName="acme") == []


# ----------------------------------------------------------------------------- vouchers list


@pytest.mark.parametrize("params", [{}, {"page": "2"}, {"voucherCode": ""}])
def test_vouchers_need_at_least_one_filter(api: httpx.Client, params: dict[str, str]) -> None:
    assert_validation_error(api.get("/vouchers", params=params), "filter")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"isUsed": "yes"}, "isUsed"),
        ({"isUsed": "1"}, "isUsed"),
        ({"isActive": "maybe"}, "isActive"),
        ({"recipientEmail": "bob@"}, "recipientEmail"),
        ({"recipientEmail": "bob at example.com"}, "recipientEmail"),
    ],
)
def test_vouchers_reject_invalid_booleans_and_emails(
    api: httpx.Client, params: dict[str, str], field: str
) -> None:
    assert_validation_error(api.get("/vouchers", params=params), field)


def test_voucher_filters(api: httpx.Client) -> None:
    spring = buy(api, 2)
    cloud = buy(api, 1, programName=CLOUD)
    wait_until(lambda: len(codes_of(api, cloud["voucherPurchaseCode"])) == 1)
    spring_codes = [v["voucherCode"] for v in codes_of(api, spring["voucherPurchaseCode"])]
    assert len(spring_codes) == 2

    def listed(**params: str) -> list[str]:
        response = api.get("/vouchers", params={**params, "page": "1"})
        assert response.status_code == 200, response.text
        pages = follow_all(api, "/vouchers", params)
        return [v["voucherCode"] for page in pages for v in page.json()["data"]]

    assert listed(voucherCode=spring_codes[0]) == spring_codes[:1]
    assert listed(voucherCode=spring_codes[0][:-1]) == []
    assert len(listed(isUsed="FALSE")) == 3
    assert listed(isUsed="true") == []
    assert len(listed(isActive="True")) == 3
    assert listed(isActive="false") == []
    assert listed(storeExamCode="CLF-100") == [
        v["voucherCode"] for v in codes_of(api, cloud["voucherPurchaseCode"])
    ]
    assert listed(recipientEmail="nobody@example.com") == []
    assert listed(reservationCode="R-1") == []
    assert listed(purchaseCode=spring["voucherPurchaseCode"], isUsed="false") == spring_codes


def test_seeded_history_from_a_data_file(tmp_path: Path) -> None:
    """A data file may start the sandbox with purchases and used/assigned vouchers."""
    bundled = resources.files("voucher_distributor_cli.sandbox").joinpath("data", "sample.json")
    sample = json.loads(bundled.read_text(encoding="utf-8"))
    sample["purchases"] = [
        {
            "amountPaid": 0,
            "id": "p-1",
            "notes": "old batch",
            "partnerName": "Globex Learning",
            "programName": SPRING,
            "purchaseDateUtc": "2025-01-10T09:00:00Z",
            "purchasedByFirstName": "Hank",
            "purchasedByLastName": "Scorpio",
            "purchasedByEmail": "hank.scorpio@example.org",
            "quantity": 2,
            "quantityRemaining": 1,
            "quantityUsed": 1,
            "status": "Complete",
            "voucherPurchaseCode": "VP-OLD00001",
        }
    ]
    sample["vouchers"] = [
        {
            "assignedDateUtc": "2025-01-11T09:00:00Z",
            "expirationDateUtc": "2026-01-10T09:00:00Z",
            "id": "v-1",
            "isActive": False,
            "isUsed": True,
            "recipientEmail": "ana.silva@example.com",
            "reservationCode": "RSV-42",
            "reservationStatus": "Completed",
            "storeExamCode": "CVA-101",
            "usedBy": {
                "firstName": "Ana",
                "lastName": "Silva",
                "usedDateUtc": "2025-02-01T10:00:00Z",
            },
            "voucherCode": "SPR26-USED000001",
            "voucherPurchaseCode": "VP-OLD00001",
        },
        {
            "expirationDateUtc": "2026-01-10T09:00:00Z",
            "id": "v-2",
            "isActive": True,
            "isUsed": False,
            "storeExamCode": "CVA-101",
            "voucherCode": "SPR26-FREE000002",
            "voucherPurchaseCode": "VP-OLD00001",
        },
    ]
    data = tmp_path / "catalog.json"
    data.write_text(json.dumps(sample))
    config = SandboxConfig(data_path=data, generation_delay_s=0.0)
    with (
        SandboxServer(config) as server,
        httpx.Client(base_url=server.base_url, headers=AUTH) as api,
    ):
        by_email = api.get(
            "/vouchers/purchases", params={"purchasedByEmail": "HANK.scorpio@example.org"}
        )
        assert [p["voucherPurchaseCode"] for p in by_email.json()["data"]] == ["VP-OLD00001"]
        assert "purchasedByEmail" not in by_email.json()["data"][0]
        used = api.get("/vouchers", params={"isUsed": "true"}).json()["data"]
        assert [v["voucherCode"] for v in used] == ["SPR26-USED000001"]
        assert used[0]["usedBy"]["firstName"] == "Ana"
        assert api.get("/vouchers", params={"reservationCode": "RSV-42"}).json()["data"] == used
        assert (
            api.get("/vouchers", params={"recipientEmail": "ana.silva@example.com"}).json()["data"]
            == used
        )
        free = api.get("/vouchers", params={"isActive": "true"}).json()["data"]
        assert [v["voucherCode"] for v in free] == ["SPR26-FREE000002"]
        assert "recipientEmail" not in free[0]
        assert "usedBy" not in free[0]


# ----------------------------------------------------------------------------- paging


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "99999999999"])
def test_invalid_page_is_a_400(api: httpx.Client, page: str) -> None:
    assert_validation_error(api.get("/vouchers/programs", params={"page": page}), "page")


def test_page_past_the_end_is_empty_without_next_link(api: httpx.Client) -> None:
    body = api.get("/vouchers/programs", params={"page": "99"}).json()
    assert body == {"data": []}


def test_absolute_next_links_walk_every_page_with_the_filters(api: httpx.Client) -> None:
    pages = follow_all(api, "/vouchers/programs", {})
    assert [len(page.json()["data"]) for page in pages] == [2, 2, 2, 2]
    assert "nextLink" not in pages[-1].json()  # key omitted, not null
    assert len({n for page in pages for n in names(page)}) == 8
    link = pages[0].json()["nextLink"]
    assert link.startswith(api.base_url.scheme + "://" + api.base_url.netloc.decode())
    filtered = api.get("/vouchers/partners", params={"partnerName": "a", "status": "Active"})
    next_url = httpx.URL(filtered.json()["nextLink"])
    assert next_url.path == "/api/vouchers/partners"
    assert dict(next_url.params) == {"partnerName": "a", "status": "Active", "page": "2"}
    last = api.get(next_url).json()
    assert [p["name"] for p in last["data"]] == ["Globex Learning"]
    assert "nextLink" not in last


def test_absolute_next_link_uses_the_host_the_client_called(sandbox: SandboxServer) -> None:
    url = f"http://localhost:{sandbox.port}/api/vouchers/programs"
    link = httpx.get(url, headers=AUTH).json()["nextLink"]
    assert link.startswith(f"http://localhost:{sandbox.port}/api/vouchers/programs?")


@pytest.mark.parametrize(
    "sandbox_config",
    [SandboxConfig(page_size=3, next_link_style="relative", generation_delay_s=0.1)],
)
def test_relative_next_links(api: httpx.Client) -> None:
    buy(api, 7)
    purchase_code = api.get("/vouchers/purchases", params={"partnerName": "acme"}).json()["data"][
        0
    ]["voucherPurchaseCode"]
    wait_until(lambda: api.get("/vouchers", params={"purchaseCode": purchase_code}).json()["data"])
    first = api.get("/vouchers", params={"purchaseCode": purchase_code}).json()
    assert first["nextLink"] == f"/api/vouchers?purchaseCode={purchase_code}&page=2"
    pages = follow_all(api, "/vouchers", {"purchaseCode": purchase_code})
    assert [len(page.json()["data"]) for page in pages] == [3, 3, 1]
    assert "nextLink" not in pages[-1].json()


@pytest.mark.parametrize("sandbox_config", [SandboxConfig(record_limit=3, generation_delay_s=0.0)])
def test_more_records_than_the_limit_is_a_422(api: httpx.Client) -> None:
    too_many = api.get("/vouchers/partners")
    assert too_many.status_code == 422
    assert "10,000 record limit" in too_many.json()["title"]
    assert api.get("/vouchers/partners", params={"partnerName": "acme"}).status_code == 200
    assert api.get("/vouchers/programs").status_code == 422
    for _ in range(4):
        buy(api, 1)
    assert api.get("/vouchers/purchases", params={"partnerName": "acme"}).status_code == 422
    wait_until(lambda: api.get("/vouchers", params={"isUsed": "false"}).status_code == 422)
    code = api.get("/vouchers/purchases", params={"status": "Complete", "programName": "x"})
    assert code.status_code == 200


# ----------------------------------------------------------------------------- purchase POST


_MISSING = object()


def command(**changes: object) -> dict[str, object]:
    """A valid purchase body with some fields changed (or removed with ``_MISSING``)."""
    body: dict[str, object] = {
        "notes": "n",
        "partnerName": "Acme Corp",
        "programName": SPRING,
        "quantity": 1,
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not _MISSING}


BAD_BODIES: list[tuple[str, object, str, str]] = [
    # (case, body, field in errors, text expected in the error)
    ("array", [], "$", "object"),
    ("notes missing", command(notes=_MISSING), "Notes", "required"),
    ("notes blank", command(notes="  "), "Notes", "required"),
    ("notes number", command(notes=5), "Notes", "string"),
    ("partner missing", command(partnerName=_MISSING), "PartnerName", "required"),
    ("program blank", command(programName=""), "ProgramName", "required"),
    ("quantity missing", command(quantity=_MISSING), "Quantity", "required"),
    ("quantity 0", command(quantity=0), "Quantity", "1 and 1000"),
    ("quantity 1001", command(quantity=1001), "Quantity", "1 and 1000"),
    ("quantity string", command(quantity="5"), "Quantity", "integer"),
    ("quantity float", command(quantity=5.0), "Quantity", "integer"),
    ("quantity bool", command(quantity=True), "Quantity", "integer"),
    ("partner partial name", command(partnerName="Acme"), "PartnerName", "not found"),
    ("program partial name", command(programName="Spring"), "ProgramName", "not found"),
    ("inactive partner", command(partnerName="Initech Training"), "PartnerName", "not active"),
    ("archived partner", command(partnerName="Umbrella Academy"), "PartnerName", "not active"),
    (
        "inactive program",
        command(programName="Legacy Networking Exam 2019"),
        "ProgramName",
        "not active",
    ),
    (
        "archived program",
        command(programName="Winter Certification Drive 2024"),
        "ProgramName",
        "not active",
    ),
    (
        "priced program",
        command(programName="Professional Architect Certification"),
        "ProgramName",
        "$0",
    ),
    (
        "partner not assigned",
        command(programName="Globex Partner Pilot"),
        "ProgramName",
        "not assigned",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "field", "text"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_invalid_purchases_are_400_and_buy_nothing(
    api: httpx.Client, sandbox: SandboxServer, case: str, body: object, field: str, text: str
) -> None:
    problem = assert_validation_error(api.post("/vouchers/purchases", json=body), field)
    assert text in " ".join(problem["errors"][field])
    assert sandbox.purchases() == []


def test_malformed_or_non_json_bodies(api: httpx.Client, sandbox: SandboxServer) -> None:
    headers = {"Content-Type": "application/json"}
    assert_validation_error(
        api.post("/vouchers/purchases", content=b"{not json", headers=headers), "$"
    )
    assert_validation_error(
        api.post("/vouchers/purchases", content=b'"text"', headers=headers), "$"
    )
    plain = api.post("/vouchers/purchases", content=b"{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert sandbox.purchases() == []


def test_assigned_partner_buys_a_restricted_program_at_zero_price(api: httpx.Client) -> None:
    purchase = buy(api, 1, partnerName="Globex Learning", programName="globex partner pilot")
    assert purchase["programName"] == "Globex Partner Pilot"
    assert purchase["amountPaid"] == 0
    buy(api, 1000, programName="Example Corp Employee Upskilling")  # the upper bound is allowed


def test_good_purchase_is_created_then_generated(api: httpx.Client, sandbox: SandboxServer) -> None:
    before = datetime.now().astimezone()
    purchase = buy(api, 5, notes="Q2 batch [vd:chunk-1]")
    assert purchase["status"] == "VoucherCreation"
    assert purchase["quantity"] == purchase["quantityRemaining"] == 5
    assert purchase["quantityUsed"] == 0
    assert purchase["amountPaid"] == 0
    assert purchase["isArchived"] is False
    assert purchase["notes"] == "Q2 batch [vd:chunk-1]"
    assert (purchase["purchasedByFirstName"], purchase["purchasedByLastName"]) == (
        "Certiverse",
        "API",
    )
    assert purchase["voucherPurchaseCode"].startswith("VP-")
    assert purchase["purchaseDateUtc"].endswith("Z")
    model = PartnerVoucherPurchaseModel.model_validate(purchase)
    assert abs(model.purchase_date_utc - before) < timedelta(seconds=5)

    code = purchase["voucherPurchaseCode"]
    assert codes_of(api, code) == []  # nothing before the delay
    wait_until(lambda: purchase_status(api, code) == "Complete")
    vouchers = [PartnerVoucherModel.model_validate(v) for v in codes_of(api, code)]
    assert len(vouchers) == 5
    assert len({v.voucher_code for v in vouchers}) == 5
    for voucher in vouchers:
        assert voucher.voucher_code.startswith("SPR26-")
        assert voucher.voucher_purchase_code == code
        assert voucher.is_active
        assert not voucher.is_used
        assert voucher.recipient_email is None
        assert voucher.used_by is None
        assert voucher.store_exam_code == "CVA-101"
        assert voucher.expiration_date_utc == model.purchase_date_utc + timedelta(days=365)
    assert [p.voucher_purchase_code for p in sandbox.purchases()] == [code]
    assert sandbox.purchases()[0].status == "Complete"
    assert len(sandbox.vouchers()) == 5


def test_generation_failure_ends_checkout_failed_without_codes(
    api: httpx.Client, sandbox: SandboxServer
) -> None:
    sandbox.set_faults(FaultSettings(generation_failure_rate=1.0, generation_delay_s=0.05))
    code = buy(api, 2)["voucherPurchaseCode"]
    wait_until(lambda: purchase_status(api, code) == "CheckoutFailed")
    assert codes_of(api, code) == []
    failed = api.get("/vouchers/purchases", params={"status": "checkoutfailed"}).json()["data"]
    assert [p["voucherPurchaseCode"] for p in failed] == [code]
    assert sandbox.vouchers() == []


def test_generation_delay_fault_overrides_the_config(
    api: httpx.Client, sandbox: SandboxServer
) -> None:
    sandbox.set_faults(FaultSettings(generation_delay_s=60.0))
    slow = buy(api, 1)["voucherPurchaseCode"]
    sandbox.set_faults(FaultSettings(generation_delay_s=0.0))
    fast = buy(api, 1)["voucherPurchaseCode"]
    assert len(codes_of(api, fast)) == 1
    assert purchase_status(api, slow) == "VoucherCreation"


def test_status_can_read_complete_before_the_codes_exist(
    api: httpx.Client, sandbox: SandboxServer
) -> None:
    # A window wide enough that a busy machine still reads inside it.
    sandbox.set_faults(FaultSettings(generation_delay_s=0.0, complete_before_codes_s=3.0))
    code = buy(api, 2)["voucherPurchaseCode"]
    assert purchase_status(api, code) == "Complete"
    assert codes_of(api, code) == []  # the trap: Complete, but nothing to hand out yet
    wait_until(lambda: len(codes_of(api, code)) == 2)


# ----------------------------------------------------------------------------- faults


def test_fail_next_queue_answers_in_order(api: httpx.Client, sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(fail_next=["500", "503", "429", "drop"], retry_after_s=7))
    sandbox.clear_request_log()
    first = api.get("/vouchers/programs")
    assert first.status_code == 500
    assert first.json()["status"] == 500
    unavailable = api.get("/vouchers/programs")
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "7"
    limited = api.get("/vouchers/programs")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/vouchers/programs")
    assert api.get("/vouchers/programs").status_code == 200
    assert [r.status for r in sandbox.request_log()] == [500, 503, 429, None, 200]
    assert sandbox.faults().fail_next == []


def test_faults_come_before_auth_and_skip_control_endpoints(sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(fail_next=["503"]))
    assert httpx.get(sandbox.root_url + "/_sandbox/health").json() == {"ok": True}
    assert httpx.get(sandbox.base_url + "/vouchers/programs").status_code == 503
    assert httpx.get(sandbox.base_url + "/vouchers/programs").status_code == 401


def test_dropped_connection_sends_no_bytes(sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(fail_next=["drop"]))
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(b"GET /api/vouchers/programs HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1024) == b""


@pytest.mark.parametrize("kind", ["500", "drop"])
def test_post_commit_fault_still_creates_the_purchase(
    api: httpx.Client, sandbox: SandboxServer, kind: str
) -> None:
    sandbox.set_faults(FaultSettings(post_commit_fault=kind))  # type: ignore[arg-type]
    body = {"notes": "chunk-7", "partnerName": "Acme Corp", "programName": SPRING, "quantity": 2}
    if kind == "drop":
        with pytest.raises(httpx.RemoteProtocolError):
            api.post("/vouchers/purchases", json=body)
    else:
        assert api.post("/vouchers/purchases", json=body).status_code == 500
    bought = api.get("/vouchers/purchases", params={"partnerName": "Acme Corp"}).json()["data"]
    assert [p["notes"] for p in bought] == ["chunk-7"]  # bought, though the caller never heard
    assert len(sandbox.purchases()) == 1
    wait_until(lambda: len(codes_of(api, bought[0]["voucherPurchaseCode"])) == 2)
    # A rejected POST is not committed, so the fault does not apply to it.
    assert api.post("/vouchers/purchases", json={**body, "quantity": 0}).status_code == 400


def test_post_commit_fault_rate_zero_never_fires(api: httpx.Client, sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(post_commit_fault="500", post_commit_fault_rate=0.0))
    buy(api, 1)


def test_latency_delays_each_api_call(api: httpx.Client, sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(latency_s=0.3))
    started = time.monotonic()
    assert api.get("/vouchers/programs").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    httpx.get(sandbox.root_url + "/_sandbox/health")
    assert time.monotonic() - started < 0.3


def test_requests_are_logged_on_arrival(sandbox: SandboxServer) -> None:
    """A client that timed out must still find its request logged (status None until answered)."""
    sandbox.set_faults(FaultSettings(latency_s=0.4))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(sandbox.base_url + "/vouchers/programs", headers=AUTH, timeout=0.1)
    assert [(r.path, r.status) for r in sandbox.request_log()] == [("/api/vouchers/programs", None)]
    wait_until(lambda: sandbox.request_log()[0].status == 200)


def test_random_faults_at_full_rate(api: httpx.Client, sandbox: SandboxServer) -> None:
    sandbox.set_faults(FaultSettings(error_429_rate=1.0, retry_after_s=3))
    response = api.get("/vouchers/programs")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    sandbox.set_faults(FaultSettings(error_503_rate=1.0))
    assert api.get("/vouchers/programs").status_code == 503
    sandbox.set_faults(FaultSettings(error_500_rate=1.0))
    assert api.get("/vouchers/programs").status_code == 500
    sandbox.set_faults(FaultSettings(drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/vouchers/programs")
    sandbox.set_faults(FaultSettings())
    assert api.get("/vouchers/programs").status_code == 200


def test_random_faults_are_reproducible_with_a_seed() -> None:
    faults = FaultSettings(error_500_rate=0.2, error_503_rate=0.2, error_429_rate=0.2)

    def statuses() -> list[int]:
        with SandboxServer(SandboxConfig(seed=99)) as server:
            server.set_faults(faults)
            with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
                return [client.get("/vouchers/programs").status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {200, 500, 503, 429} <= set(first)


# ----------------------------------------------------------------------------- control


def test_control_endpoints(api: httpx.Client, sandbox: SandboxServer) -> None:
    root = sandbox.root_url
    assert httpx.get(root + "/_sandbox/health").json() == {"ok": True}
    purchase = buy(api, 2)
    state = httpx.get(root + "/_sandbox/state").json()
    assert [p["voucherPurchaseCode"] for p in state["purchases"]] == [
        purchase["voucherPurchaseCode"]
    ]
    assert state["requests"] == 1
    wait_until(lambda: httpx.get(root + "/_sandbox/state").json()["vouchers"] == 2)

    put = httpx.put(root + "/_sandbox/faults", json={"fail_next": [429], "retry_after_s": 5})
    assert put.status_code == 200
    assert put.json()["fail_next"] == ["429"]
    assert httpx.get(root + "/_sandbox/faults").json()["fail_next"] == ["429"]
    limited = api.get("/vouchers/programs")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "5")

    bad = httpx.put(root + "/_sandbox/faults", json={"drop_rate": 2, "bogus": 1})
    assert bad.status_code == 400
    assert {"drop_rate", "bogus"} <= set(bad.json()["errors"])
    assert httpx.put(root + "/_sandbox/token", json={}).status_code == 400
    assert httpx.get(root + "/_sandbox/nothing").status_code == 404


def test_request_log_records_api_calls_only(api: httpx.Client, sandbox: SandboxServer) -> None:
    api.get("/vouchers/partners", params={"partnerName": "acme", "page": "1"})
    httpx.get(sandbox.root_url + "/_sandbox/health")
    httpx.get(sandbox.base_url + "/vouchers/programs")
    log = sandbox.request_log()
    assert [(r.method, r.path, r.query, r.status) for r in log] == [
        ("GET", "/api/vouchers/partners", {"partnerName": "acme", "page": "1"}, 200),
        ("GET", "/api/vouchers/programs", {}, 401),
    ]
    sandbox.clear_request_log()
    assert sandbox.request_log() == []


def test_unknown_api_paths_and_methods(api: httpx.Client) -> None:
    assert api.get("/vouchers/nothing").status_code == 404
    not_allowed = api.delete("/vouchers/purchases")
    assert not_allowed.status_code == 405
    assert "POST" in not_allowed.headers["allow"]


def test_stop_closes_the_port_and_kept_alive_connections() -> None:
    server = SandboxServer(SandboxConfig()).start()
    client = httpx.Client(base_url=server.base_url, headers=AUTH)
    assert client.get("/vouchers/programs").status_code == 200
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        client.get("/vouchers/programs")
    client.close()


def test_load_catalog_validates_the_file(tmp_path: Path) -> None:
    catalog = load_catalog()
    assert len(catalog.partners) == 5
    assert len(catalog.programs) == 8
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(broken)
    broken.write_text(json.dumps({"partners": [{"name": "x"}], "programs": []}))
    with pytest.raises(CatalogError, match=r"partners\[0\]"):
        load_catalog(broken)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- CLI


def _start_cli(args: list[str], token_env: str | None) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CERTIVERSE_TOKEN", None)
    if token_env is not None:
        env["CERTIVERSE_TOKEN"] = token_env
    process = subprocess.Popen(
        [*args, "sandbox", "--port", str(port), "--generation-delay", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return process, port


@pytest.mark.parametrize(
    ("command", "stop_signal", "token_env"),
    [
        ([str(Path(sys.executable).parent / "voucher-distributor")], signal.SIGTERM, None),
        ([sys.executable, "-m", "voucher_distributor_cli.main"], signal.SIGINT, "env-secret"),
    ],
    ids=["console-script-sigterm", "python-m-sigint-env-token"],
)
def test_cli_serves_until_signalled(
    command: list[str], stop_signal: signal.Signals, token_env: str | None
) -> None:
    process, port = _start_cli(command, token_env)
    token = token_env or TOKEN
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/api" in line
        assert "curl" in line
        if token_env:
            assert token_env not in line  # the curl example names the variable instead
            assert "$CERTIVERSE_TOKEN" in line
        health = httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=5)
        assert health.json() == {"ok": True}
        programs = httpx.get(
            f"http://127.0.0.1:{port}/api/vouchers/programs",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert programs.status_code == 200
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        log = process.stderr.read()
        assert "GET /api/vouchers/programs 200" in log
        assert token not in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_a_bad_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = subprocess.run(
        [sys.executable, "-m", "voucher_distributor_cli.main", "sandbox", "--data", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "top level" in result.stderr


def test_names_differing_only_in_case_need_the_exact_case(tmp_path: Path) -> None:
    catalog = load_catalog()
    programs = [p.to_wire() for p in catalog.programs]
    programs.append({**programs[0], "id": "twin", "name": SPRING.upper()})
    data = tmp_path / "twins.json"
    data.write_text(
        json.dumps({"partners": [p.to_wire() for p in catalog.partners], "programs": programs})
    )
    with (
        SandboxServer(SandboxConfig(data_path=data)) as server,
        httpx.Client(base_url=server.base_url, headers=AUTH) as api,
    ):
        assert buy(api, 1, programName=SPRING.upper())["programName"] == SPRING.upper()
        assert buy(api, 1, programName=SPRING)["programName"] == SPRING
        ambiguous = api.post("/vouchers/purchases", json=command(programName=SPRING.lower()))
        assert (
            "ambiguous"
            in assert_validation_error(ambiguous, "ProgramName")["errors"]["ProgramName"][0]
        )
    duplicate = tmp_path / "duplicate.json"
    programs.append({**programs[0], "id": "dup"})
    duplicate.write_text(json.dumps({"partners": [], "programs": programs}))
    with pytest.raises(CatalogError, match="duplicate program name"):
        load_catalog(duplicate)
