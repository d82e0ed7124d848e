"""Issues 15 and 25, the front door: what a newcomer sees from ``local run`` for each mistake,
and the exit code. One test per finding of each issue (the CSV-level ones against the reader,
the others through ``main([...])`` on the built-in sandbox); issue 25's are ``test_issue25_N``
(its items 2, 8 to 12 also in test_local_run_command, test_approval_commands and tests/e2e)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import datetime
from importlib.metadata import distribution
from pathlib import Path

import pytest

from voucher_distributor.domain.timestamps import iso_utc, iso_z
from voucher_distributor_cli.local.command import EXIT_DONE, EXIT_NOTHING_TO_DO, _show_outcome
from voucher_distributor_cli.local.results import RunResult
from voucher_distributor_cli.main import main

SPRING = "Spring Certification Drive"


def run(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    return main(["local", "run", *args, "--out", str(out), "--timeout", "60"]), out


def request_file(path: Path, **fields: object) -> Path:
    body = {
        "requestId": "hr-front-1",
        "partnerName": "Acme Corp",
        "programName": SPRING,
        "recipients": [{"email": "ann@acme.example"}],
        **fields,
    }
    path.write_text(json.dumps({k: v for k, v in body.items() if v is not None}), "utf-8")
    return path


def test_1_a_refused_request_is_said_at_once_and_copied_to_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = request_file(tmp_path / "hook.json", callbackUrl="http://hooks.example:9000/hook")
    started = time.monotonic()
    code, out = run(tmp_path, str(path))
    assert time.monotonic() - started < 30  # not the 900 s timeout
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    assert "callbackUrl: callbackUrl must be an https:// URL" in seen.err
    (line,) = [json.loads(text) for text in seen.out.splitlines()]
    assert line["status"] == "refused"
    assert line["input"] == str(path)
    copy = Path(line["results"]["error"])
    assert copy == out / "hook.error.json"
    assert json.loads(copy.read_text())["problems"] == line["problems"]


def test_2_a_request_that_is_not_json_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "comma.json"
    path.write_text('{\n  "requestId": "hr-2",\n  "recipients": [],\n}\n', "utf-8")
    code, out = run(tmp_path, str(path))
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    assert "Traceback" not in seen.err
    assert "line 4, column 1" in seen.err
    (line,) = [json.loads(text) for text in seen.out.splitlines()]
    assert line["status"] == "refused"
    assert "line 4 column 1" in line["problems"][0]["problem"]
    assert (out / "comma.error.json").is_file()


def test_3_every_problem_of_a_refused_request_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = request_file(
        tmp_path / "two.json", requestId=None, callbackUrl="http://hooks.example:9000/hook"
    )
    good = request_file(tmp_path / "good.json", requestId="hr-front-3")
    code, _ = run(tmp_path, str(path), str(good), "--seed", "7")
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO  # the worst of the two inputs
    assert "requestId: required, but missing" in seen.err
    assert "callbackUrl: callbackUrl must be an https:// URL" in seen.err
    assert "see local-run.log" not in seen.err
    lines = [json.loads(text) for text in seen.out.splitlines()]
    assert [line["status"] for line in lines] == ["refused", "completed"]
    assert {p["field"] for p in lines[0]["problems"]} == {"requestId", "callbackUrl"}
    assert lines[1]["counts"]["assigned"] == 1


def people(path: Path, count: int, program: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    column = ",program_name" if program else ""
    cell = f",{program}" if program else ""
    path.write_text(
        f"email,first_name{column}\n"
        + "".join(f"p{n}@acme.example,P{n}{cell}\n" for n in range(count)),
        "utf-8",
    )
    return path


def test_4_a_batch_level_refusal_is_said_once_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = people(tmp_path / "typo.csv", 30)
    code, _ = run(
        tmp_path, str(path), "--partner", "Acme Corp", "--program", "Spring Certfication Drive"
    )
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    said = [line for line in seen.err.splitlines() if "named exactly" in line]
    assert len(said) == 1, seen.err
    assert said[0].startswith("  all 30 rows for 'Acme Corp' / 'Spring Certfication Drive'")
    assert "did you mean 'Spring Certification Drive'" in said[0]
    assert "more in" not in seen.err
    assert json.loads(seen.out)["counts"]["rejected"] == 30


def test_4_a_priced_program_beside_a_free_one_exits_by_what_could_be_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    priced = people(tmp_path / "priced.csv", 3, "Professional Architect Certification")
    code, _ = run(tmp_path, str(priced), "--partner", "Acme Corp")
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO  # no row got a code: not "done"
    assert seen.err.count("costs 149") == 1
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(priced.read_text("utf-8") + f"q1@acme.example,Q1,{SPRING}\n", "utf-8")
    code, _ = run(tmp_path, str(mixed), "--partner", "Acme Corp", "--seed", "3")
    seen = capsys.readouterr()
    assert code == EXIT_DONE  # every row that could get a code got one
    assert json.loads(seen.out)["counts"] == {
        "rows": 4, "assigned": 1, "existing": 0, "rejected": 3, "failed": 0
    }  # fmt: skip


def test_5_address_reasons_and_german_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "de.csv"
    path.write_text(
        "E-Mail-Adresse;Vorname;Nachname\n"
        "jürgen@acme.example;Jürgen;Groß\n"
        "carol@@acme.example;Carol;Ng\n"
        "dora@acme.example;Dora;Maar\n",
        "utf-8",
    )
    code, out = run(tmp_path, str(path), "--partner", "Acme Corp", "--program", SPRING)
    seen = capsys.readouterr()
    assert code == EXIT_DONE
    assert "'ü' is not an ASCII character; Certiverse" in seen.err
    assert "it has 2 @ signs; an address has exactly one" in seen.err
    results = (out / "de.results.csv").read_text("utf-8-sig").splitlines()
    assert "Vorname" not in results[0]  # mapped to first_name, not carried as an extra column
    assert "Dora" in results[3]


@pytest.mark.slow
def test_6_results_cite_the_line_beside_the_row_and_count_blank_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lines.csv"
    path.write_bytes(
        b"email,first_name,Notes\r\n"  # line 1
        b'ann@acme.example,Ann,"two\r\nlines"\r\n'  # lines 2-3: row 1
        b"bob@acme.example,Bob,\r\n"  # line 4: row 2
        b"carol@@acme.example,Carol,\r\n"  # line 5: row 3
        b"\r\n"  # line 6: blank (row 4)
        b"dora@acme.example,Dora,\r\n"  # line 7: row 5
        b"\r\n"  # line 8: blank (row 6)
        b"eve@acme.example,Eve,\r\n"  # line 9: row 7
    )
    code, out = run(tmp_path, str(path), str(path), "--partner", "Acme Corp", "--program", SPRING)
    seen = capsys.readouterr()
    assert code == EXIT_DONE
    assert "row      3 (line 5)  rejected  malformed e-mail address: it has 2 @ signs" in seen.err
    assert "of 5 rows; 2 blank lines skipped" in seen.err
    first, again = [json.loads(text) for text in seen.out.splitlines()]
    assert first["blankLines"] == again["blankLines"] == 2
    assert first["counts"]["rows"] == 5
    summary = json.loads((out / "lines.summary.json").read_text("utf-8"))
    assert summary["blankLines"] == 2
    for name, status in [("lines.results.csv", "assigned"), ("lines-2.results.csv", "existing")]:
        rows = list(csv.DictReader((out / name).read_text("utf-8-sig").splitlines(True)))
        assert [(r["row"], r["line"], r["email"]) for r in rows] == [
            ("1", "2", "ann@acme.example"),
            ("2", "4", "bob@acme.example"),
            ("3", "5", "carol@@acme.example"),
            ("5", "7", "dora@acme.example"),
            ("7", "9", "eve@acme.example"),
        ]
        assert [r["status"] for r in rows] == [status, status, "rejected", status, status]
        assert list(rows[0])[:3] == ["row", "line", "email"]
    request = request_file(tmp_path / "hr.json", requestId="hr-front-6")
    code, out = run(tmp_path / "hr", str(request), "--seed", "6")
    seen = capsys.readouterr()
    assert code == EXIT_DONE
    assert json.loads(seen.out)["blankLines"] == 0
    (row,) = csv.DictReader((out / "hr-front-6.results.csv").read_text("utf-8-sig").splitlines())
    assert (row["row"], row["line"], row["status"]) == ("1", "", "assigned")


@pytest.mark.slow
def test_8_codes_differ_between_runs_and_every_argument_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = []
    for attempt in ("a", "b"):
        path = people(tmp_path / attempt / "one.csv", 1, SPRING)
        code, _ = run(tmp_path / attempt, str(path), "--partner", "Acme Corp")
        assert code == EXIT_DONE
        codes.append(json.loads(capsys.readouterr().out)["purchases"][0]["purchaseCode"])
    assert codes[0] != codes[1]
    for command, says in [
        (["local", "run"], ["(default: 900.0)", "(default: local-results)", "exit codes:"]),
        (["status"], ["BATCH", "the batch id"]),
        (["find"], ["EMAIL", "the recipient's e-mail address"]),
        (["retry-failed"], ["the batch whose failed rows to retry"]),
        (["sandbox"], ["(default: 8080)", "drawn afresh"]),
    ]:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for words in says:
            assert words in text, (command, words)


def test_7_progress_says_each_state_once_and_installs_are_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = people(tmp_path / "few.csv", 3, SPRING)
    first, second = people(tmp_path / "a" / "x.csv", 2, SPRING), people(tmp_path / "b" / "y.csv", 2)
    code, _ = run(tmp_path, str(path), str(first), str(second), "--partner", "Acme Corp",
                  "--program", SPRING, "--together")  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_DONE
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert sum("      done]" in line for line in progress) == 3  # once per input
    for line in progress:  # "planned" is never shown beside codes being assigned
        assert not (line.startswith("[   planned]") and not line.endswith("assigned 0"))
    root = Path(__file__).parents[2]
    makefile = (root / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert installs
    assert all("$(call step," in line for line in installs)
    # The cause of setuptools' "Editable installation" warning box is gone: the project is
    # installed editable as a plain .pth naming its two source roots, not a meta-path finder.
    installed = distribution("voucher-distributor").files or []
    assert not [f for f in installed if str(f).endswith("_finder.py")]
    (pth,) = [f for f in installed if str(f).endswith(".pth")]
    roots = sorted(Path(entry).resolve() for entry in pth.read_text().split())
    assert roots == [(root / "cli").resolve(), (root / "layers" / "common").resolve()]


# ---------------------------------------------------------------- issue 25: round two


def test_issue25_1_a_shared_reason_is_said_once_with_how_many_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt --partner beside one bad address: the partner's reason once, with its rows
    counted and cited, not once per row."""
    path = people(tmp_path / "typo.csv", 13, SPRING)
    path.write_text(path.read_text("utf-8") + f"bad@@acme.example,Bad,{SPRING}\n", "utf-8")
    code, _ = run(tmp_path, str(path), "--partner", "Acme Crop")
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    said = [line for line in seen.err.splitlines() if "did you mean 'Acme Corp'" in line]
    assert len(said) == 1, seen.err
    assert said[0].startswith("  13 rows (1, 2, 3, 4, 5, …): rejected, no Certiverse partner")
    assert seen.err.count("2 @ signs") == 1


def test_issue25_1_at_most_twenty_lines_of_row_detail_then_the_results_file(
    tmp_path: Path,
) -> None:
    """5,000 rows with 60 reasons: 20 lines, then where the rest is."""
    rows = [
        {"row": str(n), "line": str(n + 1), "status": "rejected", "partner": "Acme Corp",
         "program": f"Program {n % 60}", "reason": f"no Certiverse program is named 'P{n % 60}'"}
        for n in range(1, 5001)
    ]  # fmt: skip
    result = RunResult(
        "f-1", {"counts": {"rows": 5000, "rejected": 5000}}, tmp_path / "r.csv", None, rows
    )
    shown = io.StringIO()
    _show_outcome(result, shown)
    detail = [line for line in shown.getvalue().splitlines() if line.startswith("  ")]
    assert len(detail) == 21
    assert detail[0].startswith("  all 84 rows for 'Acme Corp' / 'Program 1': rejected,")
    assert detail[-1] == f"  … and 40 more reasons (3,320 rows) in {tmp_path / 'r.csv'}"


def test_issue25_3_a_name_matched_in_another_case_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = people(tmp_path / "case.csv", 2, "spring certification drive")
    code, out = run(tmp_path, str(path), "--partner", "ACME Corporation", "--seed", "25")
    seen = capsys.readouterr()
    assert code == EXIT_DONE
    note = (
        "bought for partner 'Acme Corporation' was given as 'ACME Corporation' and program "
        "'Spring Certification Drive' was given as 'spring certification drive' (names are "
        "matched ignoring case)"
    )
    assert f"  2 rows (1, 2): assigned, {note}" in seen.err
    rows = list(csv.DictReader((out / "case.results.csv").read_text("utf-8-sig").splitlines()))
    assert {r["partner"] for r in rows} == {"Acme Corporation"}
    assert {r["reason"] for r in rows} == {note}


def test_issue25_4_an_over_long_row_keeps_its_email_and_a_missing_partner_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "email,partner_name,program_name,Notes\n"
        f"ann@acme.example,Acme Corp,{SPRING},{'n' * 140_000}\n"
        "bob@acme.example,,,short\n",
        "utf-8",
    )
    code, out = run(tmp_path, str(path))
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    rows = list(csv.DictReader((out / "long.results.csv").read_text("utf-8-sig").splitlines()))
    assert [(r["email"], r["partner"], r["program"], r["status"]) for r in rows] == [
        ("ann@acme.example", "Acme Corp", SPRING, "rejected"),
        ("bob@acme.example", "", "", "rejected"),
    ]
    assert rows[0]["reason"].startswith("the row is longer than 131,072 characters")
    assert "no partner or program" in rows[1]["reason"]
    assert "(local run: pass --partner NAME / pass --program NAME)" in seen.err
    assert "'' / ''" not in seen.err


def test_issue25_5_results_use_the_inputs_delimiter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "de.csv"
    path.write_bytes(
        "E-Mail-Adresse;Vorname;Abteilung\r\njürgen@acme.example;Jürgen;Vertrieb\r\n"
        "dora@acme.example;Dora;Einkauf, Süd\r\n".encode("cp1252")
    )
    code, out = run(tmp_path, str(path), "--partner", "Acme Corp", "--program", SPRING)
    capsys.readouterr()
    assert code == EXIT_DONE
    data = (out / "de.results.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfrow;line;email;")  # UTF-8 with BOM, for Excel
    lines = data.decode("utf-8-sig").splitlines()
    # the e-mail state is the last of ours; the input's own columns follow, as typed
    assert lines[0].endswith(";reason;email_status;Abteilung")
    assert lines[2].startswith("2;3;dora@acme.example;Dora;")
    assert lines[2].endswith(";Einkauf, Süd")  # a comma is only a character here
    summary = json.loads((out / "de.summary.json").read_text("utf-8"))
    assert summary["resultsFormat"] == {"delimiter": ";", "encoding": "utf-8", "bom": True}


def test_issue25_6_a_file_without_an_email_column_is_rejected_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "names.csv"
    path.write_text("name,department\nAda,Eng\n", "utf-8")
    code, out = run(tmp_path, str(path), "--partner", "Acme Corp", "--program", SPRING)
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    (line,) = [json.loads(text) for text in seen.out.splitlines()]
    assert line["status"] == "rejected"
    assert "no e-mail column" in line["error"]
    assert json.loads((out / "names.summary.json").read_text("utf-8"))["status"] == "rejected"


def test_issue25_7_dry_run_must_be_a_boolean_and_problem_paths_say_which_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = request_file(
        tmp_path / "yes.json",
        dryRun="yes",
        recipients=[{"email": "ann@acme.example"}, {"firstName": "Bob"}],
    )
    code, _ = run(tmp_path, str(path))
    seen = capsys.readouterr()
    assert code == EXIT_NOTHING_TO_DO
    (line,) = [json.loads(text) for text in seen.out.splitlines()]
    assert line["status"] == "refused"
    assert {p["field"]: p["problem"] for p in line["problems"]} == {
        "dryRun": "must be true or false (a JSON boolean, without quotes)",
        "recipients[1].email": "required, but missing (recipients[1] is the 2nd recipient, "
        "counting from 0)",
    }
    assert "  recipients[1].email: required, but missing" in seen.err


def test_issue25_12_timestamps_are_whole_seconds_with_z(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary, the results CSV and ``find`` (through the same record) write one form."""
    path = people(tmp_path / "t.csv", 1, SPRING)
    code, out = run(tmp_path, str(path), "--partner", "Acme Corp", "--seed", "12")
    capsys.readouterr()
    assert code == EXIT_DONE
    summary = json.loads((out / "t.summary.json").read_text("utf-8"))
    (row,) = csv.DictReader((out / "t.results.csv").read_text("utf-8-sig").splitlines())
    whole = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    for moment in (*summary["timings"].values(), row["expires_utc"]):
        if isinstance(moment, str):
            assert whole.fullmatch(moment), moment
    assert iso_utc(1_764_000_000.987654) == "2025-11-24T16:00:00Z"
    assert iso_z(datetime(2027, 1, 2, 3, 4, 5, 678_901)) == "2027-01-02T03:04:05Z"
