"""Issue 23 item 8: two ingests of one batch never undo each other.

A repeat POST of a request queues it again, and an upload can be delivered twice, so a second
delivery B can ingest a batch while the first, A, still does. The interleaving is forced at a
real seam: A's rows are read lazily, so B runs (to its end) from inside A's reading, once A's
first round of claims is in the ledger, while Certiverse is down for B's pre-flight.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.pipeline.context import Services, build_services
from voucher_distributor.pipeline.ingest import IngestBusy, IngestRequest, IngestRetryLater, ingest
from voucher_distributor.pipeline.sources import upload_request
from voucher_distributor.settings import Settings
from voucher_distributor_cli.sandbox import FaultSettings

from ..invariants import assert_consistent, iter_holdings
from .conftest import PARTNER, SPRING, World, people
from .test_holdings import statuses


def _services(world: World, monkeypatch: pytest.MonkeyPatch) -> Services:
    """The ingest function's services, built in this process (the use case called directly)."""
    assert world.pipeline.lambdas is not None
    env = world.pipeline.lambdas.environment("IngestCsvFunction")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_services(Settings.from_environ(env))


def _two_deliveries(
    make_world: Any, monkeypatch: pytest.MonkeyPatch, rows: int
) -> tuple[World, Services, str, IngestRequest, IngestRequest]:
    """One upload of ``rows`` people, and two deliveries of it (A, B) to ingest by hand."""
    world = make_world()
    services = _services(world, monkeypatch)
    batch_id = world.pipeline.submit_csv(world.csv_file(people(rows)))
    s3 = world.pipeline.stack.client("s3")
    version = s3.head_object(Bucket=world.pipeline.bucket, Key="incoming/people.csv")["VersionId"]
    first = upload_request(services, "incoming/people.csv", version, sender="A")
    second = upload_request(services, "incoming/people.csv", version, sender="B")
    assert first is not None
    assert second is not None
    return world, services, batch_id, first, second


def _until(done: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "A's first round of claims never landed"
        time.sleep(0.05)


def _all_assigned_once(world: World, batch_id: str, rows: int) -> None:
    """The rest of the pipeline runs the batch to its end: each of its ``rows`` got a code, and
    the ledger's holdings and the sandbox's purchases count each one once."""
    world.pipeline.run_until_done(batch_id, timeout_s=120)
    result = world.pipeline.result(batch_id)
    assert statuses(result) == {"assigned": rows}
    assert_consistent(world, result, whole_sandbox=False)
    assert len(list(iter_holdings(world.pipeline.ledger))) == rows
    assert sum(p.quantity for p in world.sandbox.purchases()) == rows


def test_a_second_delivery_meeting_an_outage_gives_back_nothing_of_the_first(
    make_world, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, services, batch_id, first, second = _two_deliveries(make_world, monkeypatch, 1100)
    assert first.batch.batch_id == batch_id
    seen: dict[str, BaseException] = {}

    def a_rows() -> Iterator[InputRow]:
        for number, row in enumerate(first.rows, start=1):
            yield row
            if number == 1050:
                # Rows 1-1000 went to the ledger as one round of claims: wait until it landed.
                _until(
                    lambda: (
                        services.ledger.holdings.get_holding(
                            "person1000@acme.example", PARTNER, SPRING
                        )
                        is not None
                    )
                )
                world.sandbox.set_faults(FaultSettings(error_503_rate=1.0, retry_after_s=0))
                try:
                    ingest(services, replace(second, final_attempt=False, attempt=1))
                except IngestRetryLater as exc:
                    seen["B"] = exc
                finally:
                    world.sandbox.set_faults(FaultSettings())

    outcome = ingest(services, replace(first, rows=a_rows()))
    assert outcome.chunks == 2
    holdings = world.pipeline.ledger.holdings
    assert holdings.get_holding("person1@acme.example", PARTNER, SPRING) is not None
    assert [c.chunk_no for c in world.pipeline.ledger.chunks.iter_chunks(batch_id)] == [0, 1]

    # The rest of the pipeline (and the upload's own delivery, a third: a repeat) finishes it.
    _all_assigned_once(world, batch_id, 1100)
    # B changed nothing: it found A's lease and came back later.
    assert isinstance(seen.get("B"), IngestBusy), seen


def test_a_second_delivery_meeting_a_401_does_not_fail_the_batch(
    make_world, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a 401 B would fail a batch that A is still ingesting: it may not, without the lease."""
    world, services, batch_id, first, second = _two_deliveries(make_world, monkeypatch, 3)
    seen: dict[str, BaseException] = {}

    def a_rows() -> Iterator[InputRow]:
        for number, row in enumerate(first.rows, start=1):
            yield row
            if number == 2:
                world.sandbox.set_token("rotated-meanwhile")
                try:
                    ingest(services, replace(second, final_attempt=False, attempt=1))
                except IngestRetryLater as exc:
                    seen["B"] = exc
                finally:
                    world.sandbox.set_token("e2e-token")

    ingest(services, replace(first, rows=a_rows()))
    world.pipeline.run_until_done(batch_id, timeout_s=60)
    result = world.pipeline.result(batch_id)
    assert statuses(result) == {"assigned": 3}
    assert result.summary["status"] == "completed"
    assert isinstance(seen.get("B"), IngestBusy), seen


def test_a_delivery_that_fails_ends_its_lease_so_the_next_takes_the_batch_at_once(
    make_world, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reliability seed 302: a delivery that failed (not died) kept its lease, so the next
    delivery waited it out (IngestBusy), spending one of the queue's six deliveries; with an
    outage's send-backs and a crash that sent the input to its dead-letter queue."""
    world, services, batch_id, first, second = _two_deliveries(make_world, monkeypatch, 1100)

    def a_rows() -> Iterator[InputRow]:
        for number, row in enumerate(first.rows, start=1):
            yield row
            if number == 1050:  # the first round of claims (rows 1-1000) is in the ledger
                raise ConnectionResetError("the upload's stream broke (reading it)")

    with pytest.raises(ConnectionResetError):
        ingest(services, replace(first, rows=a_rows()))
    held = world.pipeline.ledger.batches.get_batch(batch_id)
    assert held is not None
    assert held.ingest_lease_until == 0  # given up with the failure, not left to run out
    # B is not sent away to wait: it plans the batch now, A's claims its own.
    outcome = ingest(services, replace(second, final_attempt=False, attempt=2))
    assert outcome.chunks == 2
    _all_assigned_once(world, batch_id, 1100)
