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
)


def test_batch_ids_are_stable_and_distinct():
    a = csv_batch_id("inbox", "incoming/a.csv", "v1")
    assert a == csv_batch_id("inbox", "incoming/a.csv", "v1")  # redelivery: the same batch
    assert a != csv_batch_id("inbox", "incoming/a.csv", "v2")  # a new upload: a new batch
    assert request_batch_id("req-1") == request_batch_id("req-1")
    assert request_batch_id("req-1") != request_batch_id("req-2")
    assert a.startswith("f-")
    assert request_batch_id("x").startswith("r-")


def test_marker_round_trip_and_no_false_match():
    notes = purchase_notes("Q4 cohort", "f-abc123", 7)
    assert notes == "Q4 cohort [vd:f-abc123:00007]"
    assert find_marker(notes, "f-abc123", 7)
    assert not find_marker(notes, "f-abc123", 70)
    assert not find_marker(notes, "f-abc12", 7)
    assert not find_marker("someone else's purchase", "f-abc123", 7)
    assert chunk_marker("f-abc123", 7) in notes


def test_notes_are_single_line_and_bounded():
    notes = purchase_notes("line one\nline two\t" + "x" * 500, "r-1", 0)
    assert "\n" not in notes
    assert len(notes) < 260
    assert purchase_notes("", "r-1", 0) == "voucher-distributor [vd:r-1:00000]"


def test_result_keys_mirror_the_upload_path():
    keys = result_keys_for_upload("incoming/hr/2026/Staff List.csv")
    assert keys.results_csv == "results/hr/2026/Staff List.results.csv"
    assert keys.summary_json == "results/hr/2026/Staff List.summary.json"


@given(st.text(max_size=80))
def test_result_keys_never_escape_results(key):
    for keys in (result_keys_for_upload("incoming/" + key), result_keys_for_request(key)):
        for path in (keys.results_csv, keys.summary_json):
            assert path.startswith("results/")
            assert "/../" not in path
            assert "//" not in path
            assert not any(part in {"..", "."} for part in path.split("/"))


def test_hostile_request_ids_are_tamed():
    keys = result_keys_for_request("../../incoming/evil.csv")
    assert keys.results_csv.startswith("results/requests/")
    assert "incoming/" not in keys.results_csv
