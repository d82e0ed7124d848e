from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.batches import (
    chunk_marker,
    csv_batch_id,
    find_marker,
    purchase_notes,
    request_batch_id,
    result_keys_for_request,
    result_keys_for_upload,
    short_batch_id,
    stack_tag,
    trailing_marker,
)


def test_batch_ids_are_stable_and_distinct():
    a = csv_batch_id("inbox", "incoming/a.csv", "v1")
    assert a == csv_batch_id("inbox", "incoming/a.csv", "v1")  # redelivery: the same batch
    assert a != csv_batch_id("inbox", "incoming/a.csv", "v2")  # a new upload: a new batch
    assert request_batch_id("req-1") == request_batch_id("req-1")
    assert request_batch_id("req-1") != request_batch_id("req-2")
    assert a.startswith("f-")
    assert request_batch_id("x").startswith("r-")


STACK = stack_tag("arn:aws:cloudformation:eu-west-1:111111111111:stack/vd/1")
OTHER = stack_tag("arn:aws:cloudformation:eu-west-1:222222222222:stack/vd/2")


def test_marker_round_trip_and_no_false_match():
    notes = purchase_notes("Q4 cohort", "f-abc123", 7, STACK)
    assert notes == f"Q4 cohort [vd:{STACK}:f-abc123:00007]"
    assert find_marker(notes, "f-abc123", 7, STACK)
    assert not find_marker(notes, "f-abc123", 70, STACK)
    assert not find_marker(notes, "f-abc12", 7, STACK)
    assert not find_marker("someone else's purchase", "f-abc123", 7, STACK)
    assert notes.endswith(chunk_marker("f-abc123", 7, STACK))
    assert find_marker(notes, "f-abc123", 7, None)  # checks from outside: any stack


def test_another_stacks_marker_is_not_ours():
    """Two stacks on one Certiverse account give a requestId the same batch id: the stack tag
    tells their purchases apart."""
    assert STACK != OTHER
    assert len(STACK) == 8
    theirs = purchase_notes("", "r-same", 0, OTHER)
    assert find_marker(theirs, "r-same", 0, OTHER)
    assert not find_marker(theirs, "r-same", 0, STACK)


def test_only_the_trailing_marker_counts_and_user_markers_are_stripped():
    typed = f"see [vd:{STACK}:f-abc123:00007] thanks"
    assert not find_marker(typed, "f-abc123", 7, STACK)  # not at the end: not ours
    assert not find_marker(
        f"[vd:{STACK}:f-abc123:00007] [vd:{OTHER}:f-x:00000]", "f-abc123", 7, STACK
    )
    notes = purchase_notes(f"[vd:{STACK}:r-victim:00000] [V[vd:d:x]", "r-mine", 3, STACK)
    assert notes.count("[vd:") == 1
    assert "[vd:" not in notes.lower().removesuffix(chunk_marker("r-mine", 3, STACK).lower())
    assert trailing_marker(notes) == (STACK, "r-mine", 3)
    # A submitter typing the victim's marker at the end of their notes still gets ours after it.
    assert not find_marker(notes, "r-victim", 0, STACK)


@given(st.text(max_size=300))
def test_no_user_note_can_carry_a_marker(user_notes: str) -> None:
    notes = purchase_notes(user_notes, "r-1", 0, STACK)
    assert notes.lower().count("[vd:") == 1
    assert trailing_marker(notes) == (STACK, "r-1", 0)


def test_notes_are_single_line_and_bounded():
    notes = purchase_notes("line one\nline two\t" + "x" * 500, "r-1", 0, STACK)
    assert "\n" not in notes
    assert len(notes) < 270
    assert purchase_notes("", "r-1", 0, STACK) == f"voucher-distributor [vd:{STACK}:r-1:00000]"


def test_result_keys_mirror_the_upload_path():
    batch = csv_batch_id("inbox", "incoming/hr/2026/Staff List.csv", "v1")
    keys = result_keys_for_upload("incoming/hr/2026/Staff List.csv", batch)
    assert keys.results_csv == f"results/hr/2026/Staff List.{batch[:14]}.results.csv"
    assert keys.summary_json == f"results/hr/2026/Staff List.{batch[:14]}.summary.json"
    assert short_batch_id(batch) == batch[:14]


def _upload(key: str, version: str = "v1") -> str:
    return result_keys_for_upload(key, csv_batch_id("inbox", key, version)).results_csv


def _request(request_id: str) -> str:
    return result_keys_for_request(request_id, request_batch_id(request_id)).results_csv


def test_result_keys_are_unique_per_batch():
    """Pairs whose readable names meet: each batch still has results of its own (before, the
    later one overwrote the earlier, and /results or retry-failed of one used the other's)."""
    long = "x" * 100
    pairs = [
        (_request("a/b"), _request("a_b")),
        (_request(long + "-one"), _request(long + "-two")),
        (_upload("incoming/requests/x/x.csv"), _request("x")),
        (_upload("incoming/team.csv", "v1"), _upload("incoming/team.csv", "v2")),
    ]
    for first, second in pairs:
        assert first != second
    assert _request("a/b").startswith("results/requests/a_b/a_b.r-")  # still readable


@given(st.text(max_size=80))
def test_result_keys_never_escape_results(key):
    for keys in (
        result_keys_for_upload("incoming/" + key, csv_batch_id("inbox", key, "v")),
        result_keys_for_request(key, request_batch_id(key)),
    ):
        for path in (keys.results_csv, keys.summary_json):
            assert path.startswith("results/")
            assert "/../" not in path
            assert "//" not in path
            assert not any(part in {"..", "."} for part in path.split("/"))


def test_hostile_request_ids_are_tamed():
    keys = result_keys_for_request("../../incoming/evil.csv", request_batch_id("evil"))
    assert keys.results_csv.startswith("results/requests/")
    assert "incoming/" not in keys.results_csv
