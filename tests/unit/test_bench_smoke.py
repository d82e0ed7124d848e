"""Smoke test of the benchmark code (no timing, no pipeline run): `make bench` stays out of CI."""

from __future__ import annotations

from bench.__main__ import _split
from bench.pipeline_run import WriteCounter, classify, floor_calls
from bench.sync_calls import SyncCalls, voucher_pages

from voucher_distributor_cli.sandbox.store import RequestRecord


def _get(path: str, **query: str) -> RequestRecord:
    return RequestRecord("GET", path, query, 200)


def test_calls_are_sorted_into_floor_and_polls() -> None:
    log = [
        _get("/api/vouchers/partners", partnerName="Acme Corp"),
        _get("/api/vouchers/programs", programName="Spring"),
        RequestRecord("POST", "/api/vouchers/purchases", {}, 200),
        _get("/api/vouchers/purchases", purchaseCode="VP-1"),
        _get("/api/vouchers", purchaseCode="VP-1"),  # before the codes: a poll
        _get("/api/vouchers/purchases", purchaseCode="VP-1"),
        _get("/api/vouchers", purchaseCode="VP-1"),
        _get("/api/vouchers", purchaseCode="VP-1", page="2"),
        _get("/api/vouchers/purchases", partnerName="Acme Corp", programName="Spring"),
    ]
    calls = classify(log)
    assert (calls.posts, calls.preflight, calls.voucher_pages) == (1, 2, 2)
    assert calls.polls == 3
    assert calls.other == 1
    assert calls.non_poll == 6


def test_floor_and_split() -> None:
    assert _split(10_000) == {
        "Spring Certification Drive": 5_000,
        "Cloud Fundamentals Exam Vouchers": 5_000,
    }
    assert floor_calls({"a": 5_000, "b": 5_000}, 100, 3) == 3 + 2 * (5 + 50)
    assert floor_calls({"a": 1_001}, 100, 2) == 2 + 2 + 11


def test_write_counter_counts_items() -> None:
    counter = WriteCounter()
    counter.count("PutItem", {})
    counter.count("BatchWriteItem", {"RequestItems": {"t": [{}, {}, {}]}})
    counter.count("TransactWriteItems", {"TransactItems": [{"Update": {}}, {"ConditionCheck": {}}]})
    counter.count("GetItem", {})
    assert counter.items == 5


def test_sync_floor_counts_unsettled_pages_and_open_purchases() -> None:
    synced = SyncCalls(
        codes=10_000, settled=5_000, purchases=10, settled_purchases=3, page_size=100,
        calls=56, first_run_calls=100, other_calls=0,
    )  # fmt: skip
    assert synced.floor == 50 + 7
    assert round(synced.ratio, 3) == 0.982
    log = [_get("/api/vouchers", purchaseCode="VP-1"), _get("/api/vouchers/purchases", status="x")]
    assert voucher_pages(log) == (1, 1)


def test_the_lookup_bench_counts_reads_of_one_voucher_look_up() -> None:
    """`lookup_reads_per_call` on a small ledger: the same ≤ 3 as at 100,000 (the bench's)."""
    from bench.lookup_reads import measure

    looked = measure(300)
    assert looked.reads_per_call <= 3
    assert looked.by_operation["Scan"] == 0


def test_the_email_bench_counts_units_and_prices_them() -> None:
    from bench.email_send import (
        DYNAMODB_PER_WRITE_UNIT,
        SES_PER_EMAIL,
        EmailBench,
        FunctionCalls,
        _cost,
    )

    counted = FunctionCalls()
    counted.current = "SendEmailsFunction"
    counted.count("dynamodb", "PutItem", {})
    counted.count(
        "dynamodb", "TransactWriteItems", {"TransactItems": [{"Put": {}}, {"Delete": {}}]}
    )
    counted.count("dynamodb", "BatchGetItem", {"RequestItems": {"t": {"Keys": [{}, {}]}}})
    counted.count("sesv2", "SendEmail", {})
    counted.invocations["SendEmailsFunction"] = 1
    assert counted.write_units["SendEmailsFunction"] == 1 + 4  # a transaction's items cost two
    assert counted.read_units["SendEmailsFunction"] == 2
    cost = _cost(counted, {"SendEmailsFunction": 256, "EmailEventsFunction": 256})
    assert cost["ses"] == SES_PER_EMAIL
    assert cost["dynamodb_writes"] == 5 * DYNAMODB_PER_WRITE_UNIT
    # SES's $0.10 per 1,000 and three writes a recipient: $10 + $0.1875 per 100,000.
    assert round(EmailBench.floor_per_100k(), 4) == 10.1875
