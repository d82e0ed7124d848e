"""The retry file ``retry-failed`` uploads, and where ``local run`` puts several inputs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from voucher_distributor.domain.results_csv import ResultRow, ResultsCsvWriter
from voucher_distributor_cli.local.run_command import _upload_keys
from voucher_distributor_cli.ops.retry import failed_rows_csv


def results_csv(rows: list[ResultRow], extra: list[str]) -> bytes:
    out = io.StringIO(newline="")
    writer = ResultsCsvWriter(out, extra)
    for row in rows:
        writer.write(row)
    return out.getvalue().encode("utf-8")


def row(number: int, status: str, **kw: object) -> ResultRow:
    values: dict[str, object] = {
        "row_number": number, "email": f"p{number}@acme.example", "first_name": f"F{number}",
        "last_name": "L", "external_id": f"E{number}", "partner": "Acme Corp",
        "program": "Spring", "status": status, "extra": {"Team": "Ops", "row": "x"},
    }  # fmt: skip
    values.update(kw)
    return ResultRow(**values)  # type: ignore[arg-type]


def test_only_failed_rows_go_again_with_their_own_columns_and_row_number() -> None:
    content, count = failed_rows_csv(
        results_csv(
            [row(1, "assigned", voucher_code="C1"), row(2, "failed", reason="Certiverse down"),
             row(3, "rejected"), row(4, "existing"), row(5, "failed", first_name="=cmd()")],
            ["Team", "row"],
        )
    )  # fmt: skip
    assert count == 2
    table = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert [r["email"] for r in table] == ["p2@acme.example", "p5@acme.example"]
    assert [r["original_row"] for r in table] == ["2", "5"]
    first = table[0]
    assert (first["partner_name"], first["program_name"], first["external_id"]) == (
        "Acme Corp",
        "Spring",
        "E2",
    )
    # the user's own columns travel on; one named like ours comes back under its new name
    assert first["Team"] == "Ops"
    assert first["row (input)"] == "x"
    # the results file's formula guard is undone (the pipeline adds it again on the way out)
    assert table[1]["first_name"] == "=cmd()"


def test_no_failed_rows_makes_an_empty_retry() -> None:
    assert failed_rows_csv(results_csv([row(1, "assigned")], ["Team", "row"]))[1] == 0


def test_several_inputs_keep_their_keys_apart_only_when_sent_together() -> None:
    paths = [Path("a/people.csv"), Path("b/people.csv"), Path("req.json"), Path("c/other.csv")]
    assert _upload_keys(paths, together=False) == [
        "incoming/people.csv", "incoming/people.csv", None, "incoming/other.csv",
    ]  # fmt: skip
    assert _upload_keys(paths, together=True) == [
        "incoming/people.csv", "incoming/2/people.csv", None, "incoming/other.csv",
    ]  # fmt: skip


def test_the_retry_file_keeps_reissue_and_the_original_line() -> None:
    content, count = failed_rows_csv(
        results_csv(
            [row(1, "failed", line=2), row(2, "failed", line=3), row(3, "failed", line=5)],
            ["Team", "row"],
        ),
        reissue_rows={1, 3},
    )
    assert count == 3
    table = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert [r["reissue"] for r in table] == ["yes", "", "yes"]
    assert [r["original_line"] for r in table] == ["2", "3", "5"]
    content, _ = failed_rows_csv(results_csv([row(1, "failed")], ["Team", "row"]), reissue_all=True)
    assert [r["reissue"] for r in csv.DictReader(io.StringIO(content.decode()))] == ["yes"]
