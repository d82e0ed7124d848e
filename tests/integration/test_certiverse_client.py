"""Contract tests: the Certiverse client against the sandbox, over real HTTP on loopback."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from voucher_distributor.adapters.certiverse import (
    CertiverseClient,
    RetryPolicy,
    StaticToken,
    errors,
)
from voucher_distributor.models.certiverse import VoucherPurchaseCreateCommand
from voucher_distributor_cli.sandbox import FaultSettings, SandboxConfig, SandboxServer

TOKEN = "contract-token"
OPEN_PROGRAM = "Spring Certification Drive"
PARTNER = "Acme Corp"


class RecordingSleep:
    """Records the waits the client asks for and waits only a token amount of time."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(min(seconds, 0.01))


def make_policy(**overrides: object) -> RetryPolicy:
    options: dict[str, object] = {
        "max_attempts": 5,
        "base_delay_s": 0.01,
        "max_delay_s": 0.05,
        "total_budget_s": 20.0,
        "sleep": RecordingSleep(),
    }
    options.update(overrides)
    return RetryPolicy(**options)  # type: ignore[arg-type]


def start_sandbox(**config: object) -> SandboxServer:
    options: dict[str, object] = {
        "token": TOKEN,
        "page_size": 3,
        "generation_delay_s": 0.0,
        "seed": 7,
    }
    options.update(config)
    server = SandboxServer(SandboxConfig(**options), host="127.0.0.1", port=0)  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    sandbox = start_sandbox()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def client(server: SandboxServer) -> Iterator[CertiverseClient]:
    with CertiverseClient(server.base_url, StaticToken(TOKEN), retry=make_policy()) as api:
        yield api


def api_requests(server: SandboxServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in server.request_log()]


def buy(client: CertiverseClient, quantity: int = 3, notes: str = "contract test") -> str:
    command = VoucherPurchaseCreateCommand(
        notes=notes, partner_name=PARTNER, program_name=OPEN_PROGRAM, quantity=quantity
    )
    return client.create_purchase(command).voucher_purchase_code


def wait_for_vouchers(client: CertiverseClient, code: str, quantity: int) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        codes = [v.voucher_code for v in client.iter_vouchers(purchase_code=code)]
        if len(codes) == quantity:
            return codes
        time.sleep(0.05)
    raise AssertionError(f"purchase {code} never showed {quantity} vouchers")


# ------------------------------------------------------------------------ partners and programs


def test_list_partners_partial_filter_and_status(client: CertiverseClient) -> None:
    acme = [p.name for p in client.iter_partners(partner_name="acme")]
    assert {"Acme Corp", "Acme Corporation"} <= set(acme)  # the API's filter is partial
    inactive = list(client.iter_partners(status="inactive"))
    assert inactive
    assert all(p.status == "Inactive" for p in inactive)
    archived = list(client.iter_partners(status="Archived"))
    assert archived
    assert all(p.is_archived for p in archived)


def test_invalid_partner_status_is_refused_before_sending(
    client: CertiverseClient, server: SandboxServer
) -> None:
    with pytest.raises(errors.CertiverseValidationError, match="Active, Archived, Inactive"):
        client.list_partners(status="Deleted")
    assert api_requests(server) == []


def test_find_partner_picks_the_exact_name_among_partial_matches(client: CertiverseClient) -> None:
    assert client.find_partner("acme corp").name == "Acme Corp"
    assert client.find_partner("Acme Corporation").name == "Acme Corporation"


def test_find_partner_missing_names_the_near_misses(client: CertiverseClient) -> None:
    with pytest.raises(errors.NameNotFound, match="Acme Corp"):
        client.find_partner("Acme")


def test_find_program_picks_the_exact_name(client: CertiverseClient) -> None:
    program = client.find_program(OPEN_PROGRAM)
    assert program.name == OPEN_PROGRAM
    assert program.partners.partner_cost_per_voucher == Decimal(0)
    trap = [p.name for p in client.iter_programs(program_name=OPEN_PROGRAM)]
    assert len(trap) >= 2  # the partial filter also returns the longer name
    with pytest.raises(errors.NameNotFound):
        client.find_program("Nonexistent Program")


def test_find_program_ambiguous_by_case(tmp_path) -> None:
    from voucher_distributor_cli.sandbox import load_catalog

    catalog = load_catalog(None)
    data = {
        "partners": [p.to_wire() for p in catalog.partners],
        "programs": [p.to_wire() for p in catalog.programs],
    }
    twin = dict(data["programs"][0])
    twin.update({"id": "twin", "name": str(twin["name"]).upper()})
    data["programs"].append(twin)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    sandbox = start_sandbox(data_path=path)
    try:
        with CertiverseClient(sandbox.base_url, StaticToken(TOKEN)) as api:
            name = str(data["programs"][0]["name"])
            assert api.find_program(name).name == name  # exact case wins
            with pytest.raises(errors.AmbiguousName):
                api.find_program(name.lower())
    finally:
        sandbox.stop()


# ------------------------------------------------------------------------ pagination


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_iterates_every_page_following_next_link(style: str) -> None:
    sandbox = start_sandbox(page_size=2, next_link_style=style)
    try:
        with CertiverseClient(sandbox.base_url, StaticToken(TOKEN)) as api:
            first = api.list_partners()
            assert len(first.data) == 2
            assert first.next_link
            everything = list(api.iter_partners())
            pages = [r for r in sandbox.request_log() if r.path.endswith("/vouchers/partners")]
        ids = [p.id for p in everything]
        assert len(ids) == len(set(ids))  # no page read twice
        assert len(ids) == len(sandbox.catalog.partners)
        assert len(pages) == 1 + -(-len(ids) // 2)
    finally:
        sandbox.stop()


def test_vouchers_of_a_large_purchase_span_many_pages(client: CertiverseClient) -> None:
    code = buy(client, quantity=25)
    codes = wait_for_vouchers(client, code, 25)
    assert len(set(codes)) == 25
    assert all(c.startswith(client.find_program(OPEN_PROGRAM).voucher_code_prefix) for c in codes)


class _OkHandler(http.server.BaseHTTPRequestHandler):
    """A quiet handler whose GET answers 200 with ``body()`` as ``content_type``."""

    content_type = "application/json"

    def body(self) -> bytes:
        raise NotImplementedError

    def do_GET(self) -> None:
        body = self.body()
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


class _ForeignNextLink(_OkHandler):
    """A hostile API: its first page points nextLink at another origin."""

    next_link = ""
    seen_auth: list[str | None] = []

    def body(self) -> bytes:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        return json.dumps({"data": [], "nextLink": type(self).next_link}).encode()


@pytest.mark.parametrize("foreign", ["other-port", "other-scheme", "other-host"])
def test_next_link_to_another_origin_is_refused(foreign: str) -> None:
    class Api(_ForeignNextLink):
        seen_auth = []

    class Elsewhere(_ForeignNextLink):
        seen_auth = []

    api_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    port = other.server_address[1]
    Api.next_link = {
        "other-port": f"http://127.0.0.1:{port}/api/vouchers/partners?page=2",
        "other-scheme": f"https://127.0.0.1:{api_server.server_address[1]}/api/vouchers/partners",
        "other-host": f"http://localhost:{api_server.server_address[1]}/api/vouchers/partners",
    }[foreign]
    for srv in (api_server, other):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{api_server.server_address[1]}/api"
        with CertiverseClient(base, StaticToken("secret-token")) as api:
            with pytest.raises(errors.UnsafeNextLink, match="refusing to send the token"):
                list(api.iter_partners())
        assert Api.seen_auth == ["Bearer secret-token"]
        assert Elsewhere.seen_auth == []
    finally:
        for srv in (api_server, other):
            srv.shutdown()
            srv.server_close()


# ------------------------------------------------------------------------ purchases and vouchers


def test_create_purchase_then_vouchers_appear(
    client: CertiverseClient, server: SandboxServer
) -> None:
    command = VoucherPurchaseCreateCommand(
        notes="vd:chunk=abc", partner_name="acme corp", program_name=OPEN_PROGRAM, quantity=4
    )
    purchase = client.create_purchase(command)
    assert purchase.quantity == 4
    assert purchase.amount_paid == 0
    assert purchase.notes == "vd:chunk=abc"
    assert (purchase.purchased_by_first_name, purchase.purchased_by_last_name) == (
        "Certiverse",
        "API",
    )
    assert purchase.status in {"VoucherCreation", "Complete"}
    vouchers = wait_for_vouchers(client, purchase.voucher_purchase_code, 4)
    assert len(set(vouchers)) == 4
    listed = list(client.iter_purchases(purchase_code=purchase.voucher_purchase_code))
    assert [p.id for p in listed] == [purchase.id]
    assert listed[0].status == "Complete"
    assert [p.id for p in server.purchases()] == [purchase.id]


def test_purchase_listing_filters(client: CertiverseClient) -> None:
    first = buy(client, quantity=1, notes="first")
    buy(client, quantity=1, notes="second")
    by_program = list(client.iter_purchases(partner_name=PARTNER, program_name=OPEN_PROGRAM))
    assert len(by_program) == 2
    assert [p.voucher_purchase_code for p in client.iter_purchases(purchase_code=first)] == [first]
    assert len(list(client.iter_purchases(status="complete"))) == 2  # case-normalised
    assert list(client.iter_purchases(status="CheckoutFailed")) == []
    api_user = client.list_purchases(purchased_by_email="api@certiverse.example")
    assert len(api_user.data) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.list_purchases(), "at least one filter"),
        (lambda c: c.list_purchases(status="Shipped"), "CheckoutCancelled"),
        (lambda c: c.list_purchases(purchased_by_email="not-an-email"), "valid e-mail"),
        (lambda c: c.list_purchases(partner_name="  "), "non-empty"),
        (lambda c: c.list_vouchers(), "at least one filter"),
        (lambda c: c.list_vouchers(recipient_email="ada@"), "valid e-mail"),
        (lambda c: c.list_vouchers(is_used="yes"), "true or false"),
        (lambda c: c.list_vouchers(purchase_code="X", page=0), "page"),
    ],
)
def test_documented_validations_fail_before_any_request(
    client: CertiverseClient, server: SandboxServer, call, message: str
) -> None:
    with pytest.raises(errors.CertiverseValidationError, match=message):
        call(client)
    assert api_requests(server) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quantity": 0}, "from 1 to 1000"),
        ({"quantity": 1001}, "from 1 to 1000"),
        ({"quantity": True}, "whole number"),
        ({"notes": ""}, "notes"),
        ({"partner_name": " "}, "partnerName"),
        ({"program_name": ""}, "programName"),
    ],
)
def test_purchase_validation_before_sending(
    client: CertiverseClient, server: SandboxServer, fields: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {
        "notes": "n", "partner_name": PARTNER, "program_name": OPEN_PROGRAM, "quantity": 1,
    }  # fmt: skip
    values.update(fields)
    with pytest.raises(errors.CertiverseValidationError, match=message):
        client.create_purchase(VoucherPurchaseCreateCommand.model_construct(**values))
    assert api_requests(server) == []
    assert server.purchases() == []


def test_purchase_of_the_maximum_quantity(client: CertiverseClient) -> None:
    code = buy(client, quantity=1000)
    assert len(wait_for_vouchers(client, code, 1000)) == 1000


def _catalogue_names(server: SandboxServer) -> dict[str, str]:
    """Names of the sample catalogue's refused programs and partners, found by their rule."""
    names: dict[str, str] = {}
    for program in server.catalog.programs:
        terms = program.partners
        if not program.is_active or program.is_archived or program.is_inactive:
            names.setdefault("inactive_program", program.name)
        elif terms.is_available_to_all_voucher_partners and terms.partner_cost_per_voucher > 0:
            names.setdefault("priced_program", program.name)
    for partner in server.catalog.partners:
        if not partner.is_active or partner.is_archived:
            names.setdefault("inactive_partner", partner.name)
    return names


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("priced_program", "$0"),
        ("inactive_program", "not active"),
        ("inactive_partner", "not active"),
        ("unknown_partner", "partner"),
        ("unknown_program", "program"),
    ],
)
def test_refused_purchases_carry_the_api_message(
    client: CertiverseClient, server: SandboxServer, case: str, expected: str
) -> None:
    names = _catalogue_names(server)
    partner, program = PARTNER, OPEN_PROGRAM
    if case == "priced_program" or case == "inactive_program":
        program = names[case]
    elif case == "inactive_partner":
        partner = names[case]
    elif case == "unknown_partner":
        partner = "Nobody Inc"
    else:
        program = "No Such Program"
    command = VoucherPurchaseCreateCommand(
        notes="n", partner_name=partner, program_name=program, quantity=1
    )
    with pytest.raises(errors.CertiverseBadRequest) as raised:
        client.create_purchase(command)
    assert raised.value.status_code == 400
    assert expected in raised.value.api_message
    assert server.purchases() == []


def test_voucher_filters(client: CertiverseClient) -> None:
    code = buy(client, quantity=2)
    codes = wait_for_vouchers(client, code, 2)
    one = client.list_vouchers(voucher_code=codes[0])
    assert [v.voucher_code for v in one.data] == [codes[0]]
    unused = list(client.iter_vouchers(purchase_code=code, is_used=False))
    assert len(unused) == 2
    assert list(client.iter_vouchers(purchase_code=code, is_used=True)) == []
    assert list(client.iter_vouchers(recipient_email="nobody@example.com")) == []


def test_generation_failure_shows_a_failed_status(
    client: CertiverseClient, server: SandboxServer
) -> None:
    server.set_faults(FaultSettings(generation_failure_rate=1.0))
    code = buy(client, quantity=2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (purchase,) = client.list_purchases(purchase_code=code).data
        if purchase.has_failed:
            break
        time.sleep(0.05)
    assert purchase.status == "CheckoutFailed"
    assert list(client.iter_vouchers(purchase_code=code)) == []


# ------------------------------------------------------------------------ errors and retries


def test_wrong_token_is_unauthorized_after_one_refresh(server: SandboxServer) -> None:
    with CertiverseClient(server.base_url, StaticToken("wrong"), retry=make_policy()) as api:
        with pytest.raises(errors.CertiverseUnauthorized, match="PartnerManageVouchers"):
            api.list_programs()
    assert api_requests(server) == ["GET /api/vouchers/programs"] * 2


class RotatingToken:
    """A secret that was rotated: the cached value is stale, a refresh reads the new one."""

    def __init__(self, stale: str, fresh: str) -> None:
        self.stale, self.fresh, self.refreshes = stale, fresh, 0

    def get_token(self, *, refresh: bool = False) -> str:
        if refresh:
            self.refreshes += 1
            self.stale = self.fresh
        return self.stale


def test_rotated_token_is_refetched_once(server: SandboxServer) -> None:
    server.set_token("rotated")
    tokens = RotatingToken("old", "rotated")
    with CertiverseClient(server.base_url, tokens, retry=make_policy()) as api:
        assert api.list_programs().data
        assert api.list_programs().data
    assert tokens.refreshes == 1


def test_record_limit_422() -> None:
    sandbox = start_sandbox(record_limit=2)
    try:
        with CertiverseClient(sandbox.base_url, StaticToken(TOKEN)) as api:
            with pytest.raises(errors.CertiverseRecordLimitExceeded, match="10,000"):
                list(api.iter_partners())
    finally:
        sandbox.stop()


def test_pair_purchases_past_the_record_limit_are_listed_by_status() -> None:
    """Four purchases, a limit of two: the plain listing is a 422, each status fits."""
    sandbox = start_sandbox(record_limit=2)
    try:
        with CertiverseClient(sandbox.base_url, StaticToken(TOKEN)) as api:
            codes = [buy(api, 1, f"ready-{n}") for n in range(2)]
            for code in codes:
                wait_for_vouchers(api, code, 1)
            sandbox.set_faults(FaultSettings(generation_delay_s=3600))
            codes += [buy(api, 1, f"waiting-{n}") for n in range(2)]
            with pytest.raises(errors.CertiverseRecordLimitExceeded):
                list(api.iter_purchases(partner_name=PARTNER, program_name=OPEN_PROGRAM))
            listed = list(api.iter_pair_purchases(partner_name=PARTNER, program_name=OPEN_PROGRAM))
    finally:
        sandbox.stop()
    assert sorted(p.voucher_purchase_code for p in listed) == sorted(codes)
    assert {str(p.status) for p in listed} == {"Complete", "VoucherCreation"}


def test_transient_faults_are_retried_honouring_retry_after(server: SandboxServer) -> None:
    sleep = RecordingSleep()
    server.set_faults(FaultSettings(fail_next=["503", "429", "500", "drop"], retry_after_s=2))
    with CertiverseClient(
        server.base_url, StaticToken(TOKEN), retry=make_policy(sleep=sleep)
    ) as api:
        assert api.list_programs().data
    statuses = [r.status for r in server.request_log()]
    assert statuses == [503, 429, 500, None, 200]
    assert sleep.waits[:2] == [2.0, 2.0]  # Retry-After of the 503 and the 429
    assert all(w <= 0.05 for w in sleep.waits[2:])  # jittered backoff for the others


def test_persistent_faults_give_up_cleanly(server: SandboxServer) -> None:
    server.set_faults(FaultSettings(error_503_rate=1.0, retry_after_s=0))
    with (
        CertiverseClient(
            server.base_url, StaticToken(TOKEN), retry=make_policy(max_attempts=4)
        ) as api,
        pytest.raises(errors.CertiverseServerError, match="gave up after 4 attempt"),
    ):
        api.list_programs()
    assert len(server.request_log()) == 4


def test_retry_after_longer_than_we_may_wait_ends_the_retries(server: SandboxServer) -> None:
    server.set_faults(FaultSettings(fail_next=["429"], retry_after_s=600))
    with CertiverseClient(server.base_url, StaticToken(TOKEN), retry=make_policy()) as api:
        with pytest.raises(errors.CertiverseServerError, match="429"):
            api.list_programs()
    assert len(server.request_log()) == 1


def test_dropped_connections_are_retried(server: SandboxServer) -> None:
    server.set_faults(FaultSettings(drop_rate=0.5))  # decided by the sandbox's seeded generator
    with CertiverseClient(
        server.base_url, StaticToken(TOKEN), retry=make_policy(max_attempts=12)
    ) as api:
        for _ in range(5):
            assert api.list_programs().data
    assert any(r.status is None for r in server.request_log())


def test_timeouts_are_retried_then_reported(server: SandboxServer) -> None:
    server.set_faults(FaultSettings(latency_s=0.5))
    timeout = httpx.Timeout(connect=1.0, read=0.1, write=1.0, pool=1.0)
    with (
        CertiverseClient(
            server.base_url, StaticToken(TOKEN), retry=make_policy(max_attempts=3), timeout=timeout
        ) as api,
        pytest.raises(errors.CertiverseServerError, match="ReadTimeout"),
    ):
        api.list_programs()


def test_unreachable_api_is_reported_after_retries() -> None:
    sandbox = start_sandbox()
    base = sandbox.base_url
    sandbox.stop()
    with CertiverseClient(base, StaticToken(TOKEN), retry=make_policy(max_attempts=3)) as api:
        with pytest.raises(errors.CertiverseServerError, match="cannot connect"):
            api.list_programs()


def test_purchase_post_is_retried_on_429_and_bought_once(
    client: CertiverseClient, server: SandboxServer
) -> None:
    server.set_faults(FaultSettings(fail_next=["429", "429"], retry_after_s=0))
    buy(client, quantity=2)
    assert len(server.purchases()) == 1
    assert [r.status for r in server.request_log()] == [429, 429, 200]


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
def test_ambiguous_post_failure_is_not_retried(
    client: CertiverseClient, server: SandboxServer, fault: str
) -> None:
    server.set_faults(FaultSettings(fail_next=[fault]))
    with pytest.raises(errors.PurchaseOutcomeUnknown, match="may have been created"):
        buy(client)
    assert len(server.request_log()) == 1  # never POSTed twice


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_purchase_created_but_reply_lost_can_be_found_by_its_notes(
    client: CertiverseClient, server: SandboxServer, fault: str
) -> None:
    server.set_faults(FaultSettings(post_commit_fault=fault))
    with pytest.raises(errors.PurchaseOutcomeUnknown):
        buy(client, notes="vd:batch=b1:chunk=0007")
    server.set_faults(FaultSettings())
    found = [
        p
        for p in client.iter_purchases(partner_name=PARTNER, program_name=OPEN_PROGRAM)
        if "chunk=0007" in p.notes
    ]
    assert len(found) == 1
    assert len(server.purchases()) == 1


def test_post_timeout_is_an_unknown_outcome(server: SandboxServer) -> None:
    server.set_faults(FaultSettings(latency_s=0.5))
    timeout = httpx.Timeout(connect=1.0, read=0.1, write=1.0, pool=1.0)
    with (
        CertiverseClient(
            server.base_url, StaticToken(TOKEN), retry=make_policy(), timeout=timeout
        ) as api,
        pytest.raises(errors.PurchaseOutcomeUnknown),
    ):
        buy(api)
    assert len([r for r in server.request_log() if r.method == "POST"]) == 1


# ------------------------------------------------------------------------ base URL


def test_the_host_alone_means_the_documented_api_base(server: SandboxServer) -> None:
    host = server.base_url.removesuffix("/api")
    with CertiverseClient(host, StaticToken(TOKEN), retry=make_policy()) as api:
        assert api.base_url == server.base_url + "/"
        assert api.find_partner(PARTNER).name == PARTNER
    with CertiverseClient(host + "/", StaticToken(TOKEN), retry=make_policy()) as api:
        assert api.base_url == server.base_url + "/"


def test_a_wrong_base_path_is_a_configuration_error_naming_the_url(server: SandboxServer) -> None:
    wrong = server.base_url.removesuffix("/api") + "/v2"
    sleep = RecordingSleep()
    with CertiverseClient(wrong, StaticToken(TOKEN), retry=make_policy(sleep=sleep)) as api:
        with pytest.raises(errors.CertiverseMisconfigured) as caught:
            api.find_partner(PARTNER)
    message = str(caught.value)
    assert caught.value.status_code == 404
    assert f"GET {wrong}/vouchers/partners" in message
    assert "https://HOST/api" in message
    assert "retry-failed" in message
    assert sleep.waits == []  # not retried: it will not heal


class _HtmlSite(_OkHandler):
    """A web site where the API was expected: 200 with an HTML page."""

    content_type = "text/html"

    def body(self) -> bytes:
        return b"<!doctype html><title>Certiverse</title><p>Welcome</p>"


def test_a_reply_that_is_not_the_apis_json_is_a_configuration_error() -> None:
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlSite)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{site.server_address[1]}/portal"
        with CertiverseClient(url, StaticToken(TOKEN), retry=make_policy()) as api:
            with pytest.raises(errors.CertiverseMisconfigured, match="text/html body"):
                api.find_program(OPEN_PROGRAM)
    finally:
        site.shutdown()
