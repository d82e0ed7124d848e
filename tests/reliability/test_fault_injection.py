"""The seeded CI share of ``make reliability``, plus the fault scenarios that found bugs.

``RELIABILITY_CI_RUNS`` (default 30) seeded runs go through the same harness as the full
1,000-run suite; any broken invariant fails the test with the seed to replay:
``.venv/bin/python -m tests.reliability.run --first-seed SEED --runs 1 --workers 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from voucher_distributor.models.ledger import ChunkState

from ..invariants import iter_holdings
from .harness import PROGRAMS, Harness, Scenario, make_scenario

CI_RUNS = int(os.environ.get("RELIABILITY_CI_RUNS", "30"))
CI_FIRST_SEED = int(os.environ.get("RELIABILITY_CI_FIRST_SEED", "0"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with Harness(tmp_path_factory.mktemp("reliability")) as started:
        yield started


#: Under xdist the seeded runs are dealt to this many groups, each on one worker with its own
#: harness (as ``make reliability`` deals seeds to its workers); each seed's people are its own,
#: so a run's result does not depend on which harness ran it.
CI_GROUPS = int(os.environ.get("RELIABILITY_CI_GROUPS", "2"))


def _dealt(seed: int) -> pytest.MarkDecorator:
    return pytest.mark.xdist_group(f"reliability-{seed % CI_GROUPS}")


@pytest.mark.parametrize(
    "seed",
    [pytest.param(s, marks=_dealt(s)) for s in range(CI_FIRST_SEED, CI_FIRST_SEED + CI_RUNS)],
)
def test_seeded_fault_run_keeps_every_invariant(harness: Harness, seed: int) -> None:
    scenario = make_scenario(seed)
    record = harness.run(scenario)
    assert not record.violations, f"seed {seed} {scenario.faults}: {record.violations}"


def targeted(seed: int, faults: list[str], *, programs: int = 2, **params: object) -> Scenario:
    """A scenario with exactly these faults (rows drawn from the seed as usual)."""
    base = make_scenario(seed)
    rows = [
        {"email": f"t{seed}.{n}@acme.example", "first_name": "T", "last_name": str(n),
         "program_name": PROGRAMS[n % programs]}
        for n in range(3 * programs)
    ]  # fmt: skip
    return Scenario(
        seed=seed,
        rows=rows,
        via="csv",
        faults=faults,
        expected_rejected=set(),
        params={"fault_seed": base.params["fault_seed"], **params},
    )


# Each of these broke an invariant before the fix named beside it (layers/.../purchase.py).


def test_crash_after_the_last_chunk_ended_still_reports(harness: Harness) -> None:
    """The worker whose write ended the last chunk died before asking for the report: the
    redelivered message finds the chunk final and asks again (was: batch never reported)."""
    record = harness.run(targeted(900_001, ["wire:report-request:before:1"]))
    assert record.fired["wire:report-request:before"] == 1
    assert record.status == "done", record.violations
    assert not record.violations


def test_poll_crash_after_the_chunk_ended_still_reports(harness: Harness) -> None:
    record = harness.run(
        targeted(900_002, ["slow-generation", "wire:report-request:before:1"], programs=1)
    )
    assert record.status == "done", record.violations
    assert not record.violations


def test_token_revoked_while_polling_fails_the_chunk_visibly(harness: Harness) -> None:
    """401 while waiting for the codes: the chunk fails with the purchase named (was: retried
    into the DLQ, the chunk left PURCHASED and the batch never reported)."""
    scenario = targeted(900_003, ["slow-generation", "token-revoked"], programs=1)
    scenario.params["revoke_at_step"] = 2
    record = harness.run(scenario)
    assert record.fired["token-revoked"] == 1
    assert record.status == "done", record.violations
    assert not record.violations
    result = harness.pipeline.result(harness_batch(harness, scenario))  # type: ignore[union-attr]
    assert {r["status"] for r in result.rows} == {"failed"}
    assert all("401" in r["reason"] and "VP-" in r["reason"] for r in result.rows)


def test_worker_dead_right_after_taking_the_lease(harness: Harness) -> None:
    """The next delivery may find the lease still held: it comes back later on a message of
    its own instead of burning receives toward the DLQ (was: ChunkBusy until the DLQ)."""
    scenario = targeted(900_004, ["wire:lease:after:1", "race"], programs=1)
    record = harness.run(scenario)
    assert record.status == "done", record.violations
    assert not record.violations
    (chunk,) = harness.ledger.chunks.iter_chunks(harness_batch(harness, scenario))
    assert chunk.state == ChunkState.ASSIGNED


def harness_batch(harness: Harness, scenario: Scenario) -> str:
    from voucher_distributor.domain.batches import csv_batch_id

    assert harness.pipeline is not None
    key = f"incoming/reliability/run-{scenario.seed}.csv"
    head = harness.pipeline.stack.client("s3").head_object(Bucket=harness.pipeline.bucket, Key=key)
    version = head.get("VersionId") or str(head.get("ETag", "")).strip('"')
    return csv_batch_id(harness.pipeline.bucket, key, version)


def test_figures_table_ends_with_the_one_line(tmp_path: Path) -> None:
    from .run import figures

    records = [
        {"seed": 1, "fired": {"drop": 2}, "status": "done", "faults": ["drop"],
         "counts": {"assigned": 3}, "chunks": 1, "violations": [], "seconds": 1.0},
    ]  # fmt: skip
    table = figures(records, wall_s=1.0, workers=1, first=1)
    assert table.splitlines()[-1] == "runs: 1, faults: 2, violations: 0"
    records.append(
        {"seed": 2, "fired": {}, "status": "done", "faults": [], "multi": "re-upload",
         "statuses": ["done", "done"], "counts": {"assigned": 2, "existing": 3}, "chunks": 2,
         "violations": [], "seconds": 2.0},
    )  # fmt: skip
    table = figures(records, wall_s=1.0, workers=1, first=1)
    assert "| batches completed | 3 |" in table
    assert (
        "| runs of several inputs: duplicate uploads / overlapping requests / re-uploads "
        "| 0 / 0 / 1 |" in table
    )
    assert "| rows existing (the person already held a code: nothing bought) | 3 |" in table


def test_replayed_ingest_that_fails_preflight_drops_the_first_attempts_plan(
    harness: Harness,
) -> None:
    """Seed 452: ingest died after planning a chunk; by the replay the token was revoked, so
    every row failed at pre-flight. The first attempt's chunk and claims were left behind
    (was: the report waited for a PENDING chunk until the DLQ; the claims were never given
    back). A replay now drops chunks past its own plan and releases claims it did not make;
    one that finds the plan recorded only hands it out again."""
    record = harness.run(make_scenario(452))
    assert record.fired["wire:rejected-file:after"] == 1
    assert not record.violations
    people = {row["email"] for row in make_scenario(452).rows}
    assert not [h for h in iter_holdings(harness.ledger) if h.email in people]


def test_batch_with_nothing_to_buy_is_reported_after_dying_before_asking(
    harness: Harness,
) -> None:
    """Seed 926: a re-upload whose rows were all ``existing`` planned no chunk; its ingest died
    after marking the batch PLANNED but before asking for the report, and the redelivery found
    it "already ingested" (was: the batch never ended). A duplicate delivery of a PLANNED batch
    with no chunks now asks for the report again."""
    record = harness.run(make_scenario(926))
    assert record.fired["wire:report-request:before"] == 1
    assert not record.violations


def test_preflight_outage_longer_than_the_client_retries_is_read_again(
    harness: Harness,
) -> None:
    """Seed 278: a burst of 5xx outlasted the Certiverse client's retries during pre-flight, so
    every row failed though the outage passed seconds later (was: the rows failed on the first
    delivery). An outage now sends the input back to its queue, claims given back and nothing
    bought; only the input's last delivery fails the rows."""
    record = harness.run(make_scenario(278))
    assert not record.violations


def test_a_rejection_whose_report_died_is_finished_by_the_next_check(harness: Harness) -> None:
    """Seed 159: a batch over the threshold was rejected; the report function died right after
    writing the rejection's summary (was: the redelivered check found the batch REPORTING, not
    waiting, and dropped it: the batch never ended). The check now finishes an unfinished
    rejection."""
    record = harness.run(make_scenario(159))
    assert record.fired["wire:rejected-report:after"] == 1
    assert record.fired["approval-rejected-by-person"] == 1
    assert not record.violations


def test_people_held_by_a_batch_the_timeout_rejected_fail_for_retry_in_their_other_list(
    harness: Harness,
) -> None:
    """Seed 11: the same file uploaded twice at once; the first batch waited for approval with
    every person claimed, the copy found them held; nobody decided, the timeout rejected the
    first (its claims given back, nothing bought) and the copy's rows failed naming it, for
    retry-failed."""
    record = harness.run(make_scenario(11))
    assert record.fired["approval-rejected-by-timeout"] == 1
    assert record.counts["assigned"] == 0
    assert not record.violations


EMAIL_FAULT_CASES = [
    ("wire:ses-send:before:1", 1),  # claimed, never sent: left unknown, never re-sent
    ("wire:ses-send:after:1", 0),  # sent, not recorded: SES's Send event resolves it
    ("wire:email-record:before:1", 0),
    ("email-throttle", 0),
    ("email-paused", 0),
    ("email-redelivery", 0),
    ("email-duplicate-events", 0),
]


@pytest.mark.parametrize(("fault", "unknown"), EMAIL_FAULT_CASES)
def test_the_email_stage_never_mails_twice_nor_the_wrong_code(
    harness: Harness, fault: str, unknown: int
) -> None:
    seed = 900_100 + EMAIL_FAULT_CASES.index((fault, unknown))
    record = harness.run(targeted(seed, [fault]))
    assert not record.violations, record.violations
    # A crash kills its whole invocation: the rest of its claimed slice stays `unknown` too
    # (claimed, never sent, never re-sent on its own), so the window is at least the one row.
    left = record.fired["email:unknown-window"]
    assert record.fired["email:sent"] + left == 6
    assert left >= unknown
    if not fault.startswith("wire:"):
        assert left == 0
    if fault.startswith("wire:"):
        assert record.fired[fault.rsplit(":", 1)[0]] == 1
    else:
        assert record.fired[fault] > 0
