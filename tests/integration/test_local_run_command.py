"""``voucher-distributor local run`` with several inputs: one stack, one JSON line per input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voucher_distributor_cli.main import main

SPRING = "Spring Certification Drive"


def people_csv(path: Path, numbers: range) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "email,first_name,program_name\r\n"
        + "".join(f"p{n}@acme.example,P{n},{SPRING}\r\n" for n in numbers),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("together", [False, True])
def test_inputs_sharing_a_name_each_keep_their_own_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], together: bool
) -> None:
    first = people_csv(tmp_path / "a" / "people.csv", range(1, 5))
    second = people_csv(tmp_path / "b" / "people.csv", range(3, 7))  # p3, p4 again
    out = tmp_path / "out"
    args = ["local", "run", str(first), str(second), "--partner", "Acme Corp", "--out", str(out)]
    code = main([*args, "--together"] if together else args)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [line["status"] for line in lines] == ["completed", "completed"]
    csvs = [line["results"]["csv"] for line in lines]
    assert csvs == [str(out / "people.results.csv"), str(out / "people-2.results.csv")]
    summaries = [json.loads(Path(line["results"]["summary"]).read_text()) for line in lines]
    assert [s["batchId"] for s in summaries] == [line["batchId"] for line in lines]
    counts = [line["counts"] for line in lines]
    # Four people each, two in common: six vouchers, whichever input got there first.
    assert sum(c["assigned"] for c in counts) == 6
    assert sum(c["existing"] for c in counts) == 2
    if not together:
        assert counts[0]["assigned"] == 4
        assert counts[1] == {**counts[1], "assigned": 2, "existing": 2}
