"""The partial-batch loop the SQS handlers use instead of Powertools' BatchProcessor."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from voucher_distributor.sqs_batch import BatchFailed, SqsRecord, process_sqs_batch

SECRET = "someone@example.com"


def _record(message_id: str, body: str = "{}", receive_count: int = 1) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
        "awsRegion": "us-east-1",
    }


def _event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def _fail_on(*failing: str) -> Any:
    seen: list[str] = []

    def handler(record: SqsRecord) -> None:
        seen.append(record.message_id)
        if record.message_id in failing:
            raise ValueError(f"cannot handle {record.body}")

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def test_all_succeed_reports_no_failures_and_handles_every_record_in_order() -> None:
    handler = _fail_on()
    got = process_sqs_batch(_event(_record("a"), _record("b"), _record("c")), handler)
    assert got == {"batchItemFailures": []}
    assert handler.seen == ["a", "b", "c"]


def test_some_fail_reports_exactly_those_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    handler = _fail_on("b", "d")
    event = _event(*(_record(m, body=f'{{"email": "{SECRET}"}}') for m in "abcde"))
    with caplog.at_level(logging.ERROR):
        got = process_sqs_batch(event, handler)
    assert got == {"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "d"}]}
    assert handler.seen == list("abcde")
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "SQS message b failed; it returns to the queue",
        "SQS message d failed; it returns to the queue",
    ]
    assert all(r.exc_info is not None for r in failures)
    assert [getattr(r, "sqs_message_id", None) for r in failures] == ["b", "d"]
    # The message names the record, never its body (bodies may hold e-mail addresses).
    assert all(SECRET not in r.getMessage() for r in failures)


def test_all_fail_raises_so_the_invocation_counts_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = _fail_on("a", "b")
    with caplog.at_level(logging.ERROR), pytest.raises(BatchFailed) as raised:
        process_sqs_batch(_event(_record("a"), _record("b")), handler)
    assert raised.value.message_ids == ["a", "b"]
    assert handler.seen == ["a", "b"]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    assert "{}" not in str(raised.value)


def test_a_batch_of_one_that_fails_raises() -> None:
    with pytest.raises(BatchFailed):
        process_sqs_batch(_event(_record("only")), _fail_on("only"))


def test_empty_records_is_nothing_to_do() -> None:
    handler = _fail_on()
    assert process_sqs_batch(_event(), handler) == {"batchItemFailures": []}
    assert handler.seen == []


@pytest.mark.parametrize("event", [{}, {"Records": None}, {"Records": {"a": 1}}, {"records": []}])
def test_not_an_sqs_event_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not an SQS event"):
        process_sqs_batch(event, _fail_on())


def test_base_exceptions_are_not_swallowed() -> None:
    def handler(record: SqsRecord) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        process_sqs_batch(_event(_record("a"), _record("b")), handler)


def test_a_given_logger_gets_the_failures() -> None:
    calls: list[tuple[object, tuple[Any, ...], dict[str, Any]]] = []

    class Recorder:
        def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
            calls.append((msg, args, kwargs))

    got = process_sqs_batch(_event(_record("a"), _record("b")), _fail_on("a"), logger=Recorder())
    assert got == {"batchItemFailures": [{"itemIdentifier": "a"}]}
    assert [args for _, args, _ in calls] == [("a",)]


def test_record_view() -> None:
    record = SqsRecord(_record("m-1", body='{"batchId": "b"}', receive_count=3))
    assert record.message_id == "m-1"
    assert record.body == '{"batchId": "b"}'
    assert record.approximate_receive_count == 3
    assert record.attributes["SentTimestamp"] == "0"
    assert record.event_source_arn.endswith(":queue")
    assert "batchId" not in repr(record)


def test_a_record_names_its_queue_url_and_receipt_handle() -> None:
    record = SqsRecord(
        {"messageId": "m", "receiptHandle": "rh-1",
         "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:vd-dev-UploadQueue-x"}
    )  # fmt: skip
    assert record.receipt_handle == "rh-1"
    assert (
        record.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/vd-dev-UploadQueue-x"
    )
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        _ = SqsRecord({"messageId": "m", "eventSourceARN": "arn:aws:s3:::b"}).queue_url


def test_records_left_when_time_runs_short_are_deferred_not_handled() -> None:
    """An invocation stops taking messages when its remaining time runs low: the rest are sent
    again (deferred), neither handled nor returned (which would count toward the DLQ)."""
    handled: list[str] = []
    deferred: list[str] = []
    remaining = iter([90_000, 20_000, 20_000])

    def short() -> bool:
        return next(remaining) < 60_000

    result = process_sqs_batch(
        _event(*(_record(m) for m in ("m1", "m2", "m3", "m4"))),
        lambda r: handled.append(r.message_id),
        time_is_short=short,
        defer=lambda r: deferred.append(r.message_id),
    )
    assert handled == ["m1", "m2"]
    assert deferred == ["m3", "m4"]
    assert result == {"batchItemFailures": []}


def test_a_record_that_cannot_be_deferred_is_reported_failed() -> None:
    def refuse(record: SqsRecord) -> None:
        raise RuntimeError("queue unavailable")

    result = process_sqs_batch(
        _event(_record("m1"), _record("m2")),
        lambda r: None,
        time_is_short=lambda: True,
        defer=refuse,
    )
    assert result == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
