import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voucher_distributor.domain.csv_input import read_rows
from voucher_distributor.domain.recipients import InputRow
from voucher_distributor.domain.results_csv import (
    RESULT_COLUMNS,
    ResultRow,
    ResultsCsvWriter,
    format_expiry,
    read_results_page,
    spreadsheet_safe,
)


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_cells_a_spreadsheet_would_run_get_a_leading_quote(prefix):
    value = f'{prefix}HYPERLINK("http://evil.example")'
    assert spreadsheet_safe(value) == "'" + value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Ada",
        "Zoë Ñúñez 李",
        "a=b",
        "ada+exam@example.com",
        "'already quoted",
        " =lead space",
        "1-2",
    ],
)
def test_other_cells_are_left_exactly_as_they_are(value):
    assert spreadsheet_safe(value) == value


@given(st.text())
def test_safe_cells_never_start_a_formula_and_keep_their_text(value):
    safe = spreadsheet_safe(value)
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert safe in (value, "'" + value)


def test_expiry_is_iso_8601_utc_with_z():
    plus_two = timezone(timedelta(hours=2))
    assert format_expiry(datetime(2026, 1, 31, 1, 30, tzinfo=plus_two)) == "2026-01-30T23:30:00Z"
    assert format_expiry(datetime(2026, 1, 31, 1, 30, tzinfo=UTC)) == "2026-01-31T01:30:00Z"
    assert format_expiry(datetime(2026, 1, 31, 1, 30)) == "2026-01-31T01:30:00Z"  # naive = UTC
    assert format_expiry(None) == ""


def write(rows: list[ResultRow], extra_columns: list[str]) -> str:
    out = io.StringIO(newline="")
    writer = ResultsCsvWriter(out, extra_columns)
    for row in rows:
        writer.write(row)
    return out.getvalue()


ASSIGNED = ResultRow(
    row_number=1,
    email="zoe@example.com",
    first_name="Zoë",
    last_name="Ñúñez-Müller 李",
    external_id="=E1",
    partner="Acme",
    program="Exam",
    status="assigned",
    voucher_code="ABC-123",
    purchase_code="P-9",
    expires_utc=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    extra={"Notes": "line 1\nline, 2", "Cost Centre": "@SUM(A1)"},
    line=2,
)


def test_the_file_starts_with_a_bom_and_uses_crlf():
    text = write([ASSIGNED], ["Cost Centre", "Notes"])
    assert text.startswith("\ufeffrow,line,email,first_name,")
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 2
    assert '"line 1\nline, 2"' in text  # an embedded newline stays inside its quoted cell


def test_a_round_trip_keeps_every_cell_and_neutralises_formulas():
    data = write([ASSIGNED], ["Cost Centre", "Notes"]).encode("utf-8")
    header, cells = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert header == [*RESULT_COLUMNS, "Cost Centre", "Notes"]
    assert dict(zip(header, cells, strict=True)) == {
        "row": "1",
        "line": "2",
        "email": "zoe@example.com",
        "first_name": "Zoë",
        "last_name": "Ñúñez-Müller 李",
        "external_id": "'=E1",
        "partner": "Acme",
        "program": "Exam",
        "status": "assigned",
        "voucher_code": "ABC-123",
        "purchase_code": "P-9",
        "expires_utc": "2026-12-31T23:59:59Z",
        "reason": "",
        "email_status": "not-sent",
        "Cost Centre": "'@SUM(A1)",
        "Notes": "line 1\nline, 2",
    }


def test_the_results_file_can_be_read_back_by_the_ingest_reader():
    (row,) = read_rows([write([ASSIGNED], ["Cost Centre", "Notes"]).encode("utf-8")])
    assert (row.email, row.first_name, row.last_name) == (
        "zoe@example.com",
        "Zoë",
        "Ñúñez-Müller 李",
    )
    assert (row.partner_name, row.program_name) == ("Acme", "Exam")
    assert row.extra["Notes"] == "line 1\nline, 2"


def test_extra_columns_that_clash_with_ours_are_renamed():
    text = write([], ["Status", "reason (input)", "reason", "Team"])
    header = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert header[len(RESULT_COLUMNS) :] == [
        "Status (input)",
        "reason (input)",
        "reason (input) (input)",
        "Team",
    ]


def test_missing_extra_cells_are_empty_and_unknown_ones_are_refused():
    text = write([ResultRow(2, "a@example.com", "", "", "", "", "", "failed", extra={})], ["Team"])
    assert text.splitlines()[1].endswith(",failed,,,,,not-sent,")
    with pytest.raises(ValueError, match="Dept"):
        write(
            [ResultRow(3, "a@example.com", "", "", "", "", "", "failed", extra={"Dept": "x"})], []
        )


def test_header_names_from_the_input_are_made_safe_too():
    text = write([], ["=cmd|' /C calc'!A0"])
    header = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert header[-1] == "'=cmd|' /C calc'!A0"


def test_the_bom_can_be_left_out():
    out = io.StringIO(newline="")
    ResultsCsvWriter(out, [], bom=False)
    assert out.getvalue().startswith("row,")


def test_an_hr_request_row_has_no_line_and_its_cell_is_empty():
    text = write([ResultRow(4, "a@example.com", "", "", "", "P", "X", "assigned")], [])
    assert text.splitlines()[1].startswith("4,,a@example.com,")


def test_a_rejected_row_echoes_the_input():
    source = InputRow(
        7, "not-an-email", "Ada", "L", "E7", "Acme", None, {"Team": "x"}, "malformed", line=9
    )
    result = ResultRow.rejected(source, "malformed e-mail address", program="Exam")
    assert result == ResultRow(
        row_number=7,
        email="not-an-email",
        first_name="Ada",
        last_name="L",
        external_id="E7",
        partner="Acme",
        program="Exam",
        status="rejected",
        reason="malformed e-mail address",
        extra={"Team": "x"},
        line=9,
    )


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
        ),
        max_size=5,
    )
)
def test_any_names_round_trip_with_only_the_formula_guard_added(names):
    rows = [
        ResultRow(n, f"u{n}@example.com", first, last, "", "P", "X", "rejected", reason=first)
        for n, (first, last) in enumerate(names, start=1)
    ]
    text = write(rows, [])
    parsed = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")))[1:]
    assert [(cells[3], cells[4], cells[12]) for cells in parsed] == [
        (spreadsheet_safe(first), spreadsheet_safe(last), spreadsheet_safe(first))
        for first, last in names
    ]


# ------------------------------------------------------------------ read back a page at a time


def _results_file(n: int, delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    writer = ResultsCsvWriter(out, ["department"], delimiter=delimiter)
    for i in range(1, n + 1):
        writer.write(
            ResultRow(
                row_number=i * 2,  # row numbers need not be consecutive (blank lines)
                email=f"p{i}@example.com",
                first_name="Jürgen" if i % 3 else "=cmd()",
                last_name="O'Brien\nline two" if i % 7 == 0 else "Ng",
                external_id=str(i),
                partner="Acme Corp",
                program="Spring Cert",
                status="assigned" if i % 5 else "rejected",
                voucher_code=f"V{i:05d}" if i % 5 else "",
                expires_utc=datetime(2027, 1, 1, tzinfo=UTC) if i % 5 else None,
                reason="" if i % 5 else "duplicate",
                extra={"department": "Ops, EMEA"},
            )
        )
    return out.getvalue().encode("utf-8")


def _blocks(data: bytes, size: int = 777) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_results_file_pages_through_every_row_once_by_byte_offset(delimiter: str) -> None:
    data = _results_file(1200, delimiter)
    seen: list[dict[str, object]] = []
    page = read_results_page(_blocks(data), size=500)
    seen += page.rows
    pages = 1
    while page.next is not None:
        offset, row = page.next
        page = read_results_page(
            _blocks(data), _blocks(data[offset:]), size=500, rest_from=offset, first_row=row
        )
        seen += page.rows
        pages += 1
    assert pages == 3
    assert [r["row"] for r in seen] == [i * 2 for i in range(1, 1201)]
    first, seventh, fifth = seen[0], seen[6], seen[4]
    assert first["email"] == "p1@example.com"
    assert first["firstName"] == "Jürgen"
    assert first["voucherCode"] == "V00001"
    assert first["expiresUtc"] == "2027-01-01T00:00:00Z"
    assert first["extra"] == {"department": "Ops, EMEA"}
    assert seen[2]["firstName"] == "=cmd()"  # the spreadsheet guard is the CSV's, not JSON's
    assert seventh["lastName"] == "O'Brien\nline two"
    assert (fifth["status"], fifth["voucherCode"], fifth["reason"]) == (
        "rejected",
        None,
        "duplicate",
    )


def test_a_page_token_that_does_not_start_a_row_is_refused() -> None:
    data = _results_file(20)
    first = read_results_page(_blocks(data), size=5)
    assert first.next is not None
    offset, row = first.next
    with pytest.raises(ValueError, match="where the token says"):
        read_results_page(
            _blocks(data), _blocks(data[offset:]), size=5, rest_from=offset, first_row=row + 1
        )
    with pytest.raises(ValueError, match="row"):
        read_results_page(
            _blocks(data), _blocks(data[offset + 3 :]), size=5, rest_from=offset + 3,
            first_row=row,
        )  # fmt: skip
    last = read_results_page(_blocks(data), size=20)
    assert last.next is None
    assert len(last.rows) == 20


def test_a_page_token_still_finds_its_row_after_the_results_were_rewritten() -> None:
    """E-mail states rewrite the results file between two pages: the token's byte offset then
    points elsewhere, so the row is found from the file's start (a made-up row still fails)."""
    before = _results_file(40)
    first = read_results_page(_blocks(before), size=10)
    assert first.next is not None
    offset, row = first.next
    after = before.replace(b"Ops, EMEA", b"Ops, EMEA (delivered)")  # longer rows: offsets move
    with pytest.raises(ValueError, match=r"row|token"):
        read_results_page(
            _blocks(after), _blocks(after[offset:]), size=10, rest_from=offset, first_row=row
        )
    page = read_results_page(_blocks(after), size=10, first_row=row, find_row=True)
    assert [r["row"] for r in page.rows] == [i * 2 for i in range(11, 21)]
    with pytest.raises(ValueError, match="where the token says"):
        read_results_page(_blocks(after), size=10, first_row=row + 1, find_row=True)
    with pytest.raises(ValueError, match="where the token says"):
        read_results_page(_blocks(after), size=10, first_row=99_999, find_row=True)
