"""Security checks: what leaves the process (logs, announcements, callbacks, tokens, S3 keys).

* handler logs of a run full of bad rows, refusals and Certiverse faults hold no recipient
  e-mail, no voucher code, no API token and no callback signing key;
* the token never follows a ``nextLink`` or a redirect to another origin;
* callbacks go only to public addresses, pinned to the address that was checked, and never
  follow a redirect (e.g. to the instance metadata address);
* results keys never leave ``results/``, whatever the upload key or request id holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.adapters.callbacks import (
    SIGNATURE_HEADER,
    CallbackFailed,
    CallbackRefused,
    CallbackSender,
    check_callback_url,
    verify,
)
from voucher_distributor.adapters.certiverse import CertiverseClient, StaticToken
from voucher_distributor.adapters.certiverse.errors import UnsafeNextLink
from voucher_distributor.adapters.certiverse.retry import NO_RETRY
from voucher_distributor.domain.batches import (
    RESULTS_PREFIX,
    csv_batch_id,
    request_batch_id,
    result_keys_for_request,
    result_keys_for_upload,
)
from voucher_distributor_cli.sandbox import FaultSettings

from ..invariants import assert_consistent
from .conftest import TOKEN, World, people

PUBLIC = "93.184.216.34"
_EMAIL = re.compile(r"[A-Za-z0-9.+_-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _run(world: World, batch_id: str) -> None:
    world.pipeline.run_until_done(batch_id, timeout_s=120)
    world.pipeline.run_until_idle(timeout_s=60)


def test_logs_hold_no_addresses_codes_or_secrets(make_world) -> None:
    # The deployed callback rules (a local run would let the callback reach loopback).
    world = make_world(tuning={"CALLBACK_ALLOW_LOOPBACK": "false"})
    world.sandbox.set_faults(
        FaultSettings(error_503_rate=0.2, retry_after_s=0, post_commit_fault="drop")
    )
    rows = [*people(12), {"email": "broken-address", "program_name": "Spring Certification Drive"},
            people(1)[0], {"email": "outsider@elsewhere.example",
                           "program_name": "Example Corp Employee Upskilling"}]  # fmt: skip
    batch = world.pipeline.submit_csv(world.csv_file(rows))
    _run(world, batch)
    result = world.pipeline.result(batch)
    assert_consistent(world, result)
    # A file whose "header" is an address: the refusal quotes it in the summary, not the logs.
    headless = world.tmp / "headless.csv"
    headless.write_text("leaky.person@acme.example,Ann\r\n", encoding="utf-8")
    _run(world, world.pipeline.submit_csv(headless))
    request = {"requestId": "sec-1", "programName": "Spring Certification Drive",
               "callbackUrl": "https://127.0.0.1/hook",
               "recipients": [{"email": "hr.person@acme.example"}, {"email": "not valid"}],
               }  # fmt: skip
    _run(world, world.pipeline.submit_request(request))  # type: ignore[arg-type]
    world.pipeline.submit_request('{"requestId": 7, "recipients": [{"email": "x@acme.example"}]}')
    world.pipeline.run_until_idle(timeout_s=60)

    log = (world.tmp / "handlers.log").read_text(encoding="utf-8")
    assert "batch" in log
    assert "non-public address" in log  # the callback refusal was logged...
    assert _EMAIL.findall(log) == []  # ...and no address anywhere
    codes = [v.voucher_code for v in world.sandbox.vouchers()]
    assert codes
    assert not [c for c in codes if c in log]
    assert TOKEN not in log
    stack = world.pipeline.stack
    secrets = stack.client("secretsmanager")
    for secret in secrets.list_secrets()["SecretList"]:
        value = secrets.get_secret_value(SecretId=secret["ARN"])["SecretString"]
        for part in {value, *_json_strings(value)}:
            if len(part) >= 8:
                assert part not in log, f"secret {secret['Name']} is in the logs"


def _json_strings(value: str) -> list[str]:
    try:
        loaded = json.loads(value)
    except ValueError:
        return []
    return [v for v in loaded.values() if isinstance(v, str)] if isinstance(loaded, dict) else []


# ---------------------------------------------------------------------- the Certiverse token

Answer = Callable[[httpx.Request], httpx.Response]


def _redirecting(location: str, seen: list[str]) -> Answer:
    """A server at the wire that notes each URL it is asked for and redirects it to ``location``."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": location})

    return answer


def _certiverse(answer: Answer) -> CertiverseClient:
    """The client with the token, no retries and ``answer`` at the wire."""
    return CertiverseClient(
        "https://api.certiverse.example/api",
        StaticToken("the-token"),
        retry=NO_RETRY,
        transport=httpx.MockTransport(answer),
    )


@pytest.mark.parametrize(
    "next_link",
    [
        "https://evil.example/api/vouchers/partners?page=2",
        "//evil.example/api/vouchers/partners?page=2",
        "https://api.certiverse.example@evil.example/api/vouchers/partners",
        "http://api.certiverse.example/api/vouchers/partners?page=2",
        "https://api.certiverse.example:8443/api/vouchers/partners?page=2",
    ],
    ids=["other-host", "scheme-relative", "userinfo-trick", "downgrade", "other-port"],
)
def test_next_link_elsewhere_never_gets_the_token(next_link: str) -> None:
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("Authorization")))
        return httpx.Response(200, json={"data": [], "nextLink": next_link})

    api = _certiverse(answer)
    with pytest.raises(UnsafeNextLink):
        list(api.iter_partners())
    assert seen == [("api.certiverse.example", "Bearer the-token")]


def test_a_redirect_is_not_followed_with_the_token() -> None:
    seen: list[str] = []
    api = _certiverse(_redirecting("https://evil.example/steal", seen))
    with pytest.raises(Exception):  # noqa: B017, PT011 - any typed error; the point is below
        list(api.iter_partners())
    assert all("evil.example" not in url for url in seen)


# ---------------------------------------------------------------------- callbacks


def _resolver(*addresses: str):
    return lambda host, port: list(addresses)


def _sender(answer: Answer) -> CallbackSender:
    """A sender whose DNS answers PUBLIC, with ``answer`` at the wire and no waits."""
    return CallbackSender(
        resolver=_resolver(PUBLIC), transport=httpx.MockTransport(answer), sleep=lambda _: None
    )


@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1",),
        ("10.0.0.7",),
        ("172.16.5.4",),
        ("192.168.0.2",),
        ("169.254.169.254",),
        ("100.64.0.1",),
        ("0.0.0.0",),
        ("::1",),
        ("fe80::1%eth0",),
        ("fd00::1",),
        ("::ffff:169.254.169.254",),
        ("224.0.0.1",),
        (PUBLIC, "10.0.0.7"),  # one private answer among public ones is enough to refuse
    ],
)
def test_callback_host_resolving_to_a_non_public_address_is_refused(
    addresses: tuple[str, ...],
) -> None:
    with pytest.raises(CallbackRefused):
        check_callback_url("https://hooks.example/x", _resolver(*addresses))


def test_callback_is_sent_to_the_checked_address_with_the_name_for_tls() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    _sender(answer).send("https://hooks.example/batch-done?x=1", b'{"ok":true}', "k3y")
    (request,) = seen
    assert request.url.host == PUBLIC  # pinned: no second DNS look-up can redirect it
    assert request.headers["Host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert verify("k3y", request.headers[SIGNATURE_HEADER], request.content, now=_now())


def test_callback_redirect_to_the_metadata_address_is_not_followed() -> None:
    seen: list[str] = []
    sender = _sender(_redirecting("http://169.254.169.254/latest/meta-data/", seen))
    with pytest.raises(CallbackFailed, match="302"):
        sender.send("https://hooks.example/x", b"{}", "k3y")
    assert len(seen) == 1
    assert "169.254" not in seen[0]


def _now() -> int:
    import time

    return int(time.time())


# ---------------------------------------------------------------------- results keys


def _inside_results(key: str) -> bool:
    parts = key.split("/")
    return key.startswith(RESULTS_PREFIX) and ".." not in parts and "." not in parts[1:]


@given(st.text(max_size=300))
def test_results_keys_of_any_upload_stay_under_results(key: str) -> None:
    for candidate in (key, f"incoming/{key}", f"incoming/{key}.csv"):
        keys = result_keys_for_upload(candidate, csv_batch_id("inbox", candidate, "v1"))
        assert _inside_results(keys.results_csv), keys
        assert _inside_results(keys.summary_json), keys
        assert "" not in keys.results_csv.split("/")


@given(st.text(min_size=1, max_size=200))
def test_results_keys_of_any_request_stay_under_results_requests(request_id: str) -> None:
    keys = result_keys_for_request(request_id, request_batch_id(request_id))
    assert keys.results_csv.startswith("results/requests/")
    assert _inside_results(keys.results_csv)
    assert _inside_results(keys.summary_json)
    assert keys.results_csv.count("/") == 3
