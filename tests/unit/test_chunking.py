import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.chunking import (
    MAX_CHUNK,
    ChunkPlan,
    ChunkPlanner,
    DuplicateTracker,
    Target,
    resolve_target,
)
from voucher_distributor.domain.recipients import InputRow


def row(partner: str | None = None, program: str | None = None) -> InputRow:
    return InputRow(1, "ada@example.com", "Ada", "L", "", partner, program, {}, None)


Names = tuple[str | None, str | None]  # (partner, program)


def fallbacks(metadata: Names = (None, None), defaults: Names = (None, None)) -> dict[str, Any]:
    """resolve_target's fallbacks: the upload's metadata, then the defaults."""
    return {
        "metadata_partner": metadata[0],
        "metadata_program": metadata[1],
        "default_partner": defaults[0],
        "default_program": defaults[1],
    }


NO_FALLBACKS = fallbacks()
EVERY_FALLBACK = fallbacks(("Meta Partner", "Meta Program"), ("Default Partner", "Default Program"))


# --- targets ------------------------------------------------------------------------------------


def test_the_row_wins_over_metadata_and_defaults():
    target = resolve_target(row("Row Partner", "Row Program"), **EVERY_FALLBACK)
    assert target == Target("Row Partner", "Row Program")


def test_metadata_wins_over_defaults():
    target = resolve_target(row(), **EVERY_FALLBACK)
    assert target == Target("Meta Partner", "Meta Program")


def test_partner_and_program_resolve_independently():
    target = resolve_target(
        row(program="Row Program"), **fallbacks((None, "Meta Program"), ("Default Partner", None))
    )
    assert target == Target("Default Partner", "Row Program")


def test_blank_values_fall_through_and_names_are_trimmed():
    target = resolve_target(row(), **fallbacks(("   ", ""), (" Acme ", " Exam ")))
    assert target == Target("Acme", "Exam")


@pytest.mark.parametrize(("partner", "program"), [(None, None), ("Acme", None), (None, "Exam")])
def test_no_target_when_a_name_is_missing_everywhere(partner, program):
    assert resolve_target(row(partner, program), **NO_FALLBACKS) is None


def test_targets_are_hashable_values():
    assert len({Target("A", "P"), Target("A", "P"), Target("A", "Q")}) == 2


# --- duplicates ---------------------------------------------------------------------------------


def test_a_repeat_for_the_same_program_is_seen():
    tracker = DuplicateTracker()
    assert not tracker.seen("Exam", "ada@example.com")
    assert tracker.seen("Exam", "ada@example.com")
    assert tracker.seen("exam ", " Ada@Example.COM")  # program case and e-mail form do not matter
    assert len(tracker) == 1


def test_the_same_email_in_another_program_is_fine():
    tracker = DuplicateTracker()
    assert not tracker.seen("Exam A", "ada@example.com")
    assert not tracker.seen("Exam B", "ada@example.com")
    assert not tracker.seen("Exam A", "bob@example.com")


def test_the_tracker_grows_without_losing_or_inventing_entries():
    tracker = DuplicateTracker()
    emails = [f"user{i}@example.com" for i in range(20_000)]
    assert not any(tracker.seen("Exam", email) for email in emails)
    assert all(tracker.seen("Exam", email) for email in emails)
    assert len(tracker) == 20_000


@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "a", "B"]), st.sampled_from(["x@e.io", "X@E.IO", "y@e.io"]))
    )
)
def test_the_tracker_agrees_with_a_set(pairs):
    tracker, model = DuplicateTracker(), set()
    for program, email in pairs:
        key = (program.casefold(), email.lower())
        assert tracker.seen(program, email) == (key in model)
        model.add(key)


def test_the_tracker_costs_about_eight_bytes_per_entry():
    """Digests in sorted arrays: ~8 bytes a pair at scale, plus fixed shard buffers."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracker = DuplicateTracker()
        used: dict[int, int] = {}
        for i in range(120_000):
            tracker.seen("Exam", f"user{i}@example.com")
            if i + 1 in (40_000, 120_000):
                used[i + 1] = tracemalloc.get_traced_memory()[0] - before
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert used[120_000] <= 8 * 120_000 + 4 * 2**20  # plus the fixed shard buffers
    assert peak <= used[120_000] + 200_000  # no doubling: a merge rebuilds one small shard


# --- chunk planning -----------------------------------------------------------------------------

EXAM_A = Target("Acme", "Exam A")
EXAM_B = Target("Acme", "Exam B")


def plan(rows: list[tuple[Target, int]], max_chunk: int = MAX_CHUNK) -> list[ChunkPlan]:
    planner = ChunkPlanner(max_chunk)
    full = [chunk for target, number in rows if (chunk := planner.add(target, number))]
    return full + planner.finish()


def test_2500_rows_over_two_programs_make_1000_1000_500_each():
    rows = [(EXAM_A if n % 2 else EXAM_B, n) for n in range(1, 5001)]
    chunks = plan(rows)
    for target in (EXAM_A, EXAM_B):
        mine = [c for c in chunks if c.target == target]
        assert [c.index for c in mine] == [0, 1, 2]
        assert [len(c.row_numbers) for c in mine] == [1000, 1000, 500]
        expected = [n for t, n in rows if t == target]
        assert [n for c in mine for n in c.row_numbers] == expected


def test_a_full_chunk_is_handed_out_the_moment_it_fills():
    planner = ChunkPlanner()
    for number in range(1, MAX_CHUNK):
        assert planner.add(EXAM_A, number) is None
    chunk = planner.add(EXAM_A, MAX_CHUNK)
    assert chunk == ChunkPlan(EXAM_A, 0, tuple(range(1, MAX_CHUNK + 1)))
    assert planner.finish() == []


def test_tails_come_in_first_seen_target_order():
    chunks = plan([(EXAM_B, 1), (EXAM_A, 2), (EXAM_B, 3)])
    assert chunks == [ChunkPlan(EXAM_B, 0, (1, 3)), ChunkPlan(EXAM_A, 0, (2,))]


def test_planning_is_deterministic():
    rows = [(Target("P", f"Exam {n % 3}"), n) for n in range(1, 3500)]
    assert plan(rows) == plan(rows)


def test_a_finished_planner_refuses_more_rows():
    planner = ChunkPlanner()
    planner.finish()
    with pytest.raises(RuntimeError):
        planner.add(EXAM_A, 1)


@pytest.mark.parametrize("size", [0, MAX_CHUNK + 1])
def test_chunk_size_stays_within_what_certiverse_sells(size):
    with pytest.raises(ValueError, match="max_chunk"):
        ChunkPlanner(size)


@given(
    st.lists(st.sampled_from([EXAM_A, EXAM_B, Target("Other", "Exam A")]), max_size=60),
    st.integers(min_value=1, max_value=7),
)
def test_chunks_partition_each_target_in_order(targets, size):
    rows = [(target, number) for number, target in enumerate(targets, start=1)]
    chunks = plan(rows, size)
    for target in set(targets):
        mine = sorted((c for c in chunks if c.target == target), key=lambda c: c.index)
        assert [c.index for c in mine] == list(range(len(mine)))
        assert [n for c in mine for n in c.row_numbers] == [n for t, n in rows if t == target]
        assert all(len(c.row_numbers) == size for c in mine[:-1])
        assert 1 <= len(mine[-1].row_numbers) <= size
