"""``voucher-distributor local run`` with several inputs: one stack, one JSON line per input."""

from __future__ import annotations

import csv
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


@pytest.mark.slow
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


def test_dry_run_then_parameter_overrides_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dry-run`` reports would-assign and buys nothing (exit 0); ``--parameter-overrides``
    reaches the stack (a limit of 3 rows refuses a file of 4: exit 3); an unknown parameter is
    a one-line error (exit 1)."""
    four = people_csv(tmp_path / "four.csv", range(1, 5))
    out = tmp_path / "out"
    base = ["local", "run", str(four), "--partner", "Acme Corp", "--out", str(out)]
    code = main([*base, "--dry-run"])
    captured = capsys.readouterr()
    (line,) = [json.loads(text) for text in captured.out.splitlines()]
    assert code == 0
    assert line["dryRun"] is True
    assert line["counts"]["wouldAssign"] == 4
    assert [p["purchaseCode"] for p in line["purchases"]] == [None]
    assert line["results"]["csv"] == str(out / "four.dry-run.results.csv")
    assert "dry run, nothing bought: 4 would be assigned" in captured.err

    code = main([*base, "--parameter-overrides", "MaxRecipientsPerBatch=3"])
    captured = capsys.readouterr()
    (line,) = [json.loads(text) for text in captured.out.splitlines()]
    assert code == 3
    assert line["status"] == "rejected"  # the sender's to fix: split the file
    assert "4 rows, over MaxRecipientsPerBatch (3)" in line["error"]

    code = main([*base, "--parameter-overrides", "NoSuchParameter=1"])
    assert code == 1
    assert "parameters not in the template: NoSuchParameter" in capsys.readouterr().err


@pytest.mark.parametrize(
    "body",
    [{"requestId": "nobody", "partnerName": "Acme Corp"},
     {"requestId": "nobody-empty", "partnerName": "Acme Corp", "recipients": []}],
    ids=["neither", "empty"],
)  # fmt: skip
def test_a_request_naming_nobody_is_refused_exit_3_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, object]
) -> None:
    """Issue 23 item 3: neither ``recipients`` nor ``recipientsS3Uri`` (or an empty list)."""
    request = tmp_path / "hr.json"
    request.write_text(json.dumps(body), encoding="utf-8")
    code = main(["local", "run", str(request), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 3
    (line,) = [json.loads(text) for text in captured.out.splitlines()]
    assert line["status"] == "refused"
    assert [p["field"] for p in line["problems"]] == ["recipients"]
    assert "recipients: " in captured.err
    assert "recipientsS3Uri" in captured.err


def test_issue25_2_state_keeps_the_stack_between_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same file run twice with the same --state: the second run's rows are ``existing``,
    with the first run's codes; without --state the last line says each run starts empty."""
    path = people_csv(tmp_path / "people.csv", range(1, 4))
    state = tmp_path / "state"
    codes = []
    for attempt, status in ((1, "assigned"), (2, "existing")):
        out = tmp_path / f"out{attempt}"
        args = ["local", "run", str(path), "--partner", "Acme Corp", "--state", str(state)]
        code = main([*args, "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0
        (line,) = [json.loads(text) for text in captured.out.splitlines()]
        assert line["counts"][status] == 3, line
        with (out / "people.results.csv").open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["status"] for r in rows} == {status}
        codes.append([r["voucher_code"] for r in rows])
        assert f"state kept in {state}: run again with --state {state}" in captured.err
    assert codes[0] == codes[1]
    assert "ledger items and" in captured.err  # the second run said what it loaded
    assert (state / "certiverse.json").is_file()

    main(["local", "run", str(path), "--partner", "Acme Corp", "--out", str(tmp_path / "o3")])
    err = capsys.readouterr().err
    assert "each `local run` starts an empty one" in err
    assert "pass --state DIR to keep it between runs, or use `local up`" in err
