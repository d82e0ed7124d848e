import codecs
import csv
import io
import itertools
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from voucher_distributor.domain.csv_input import (
    HEADER_ALIASES,
    CsvInputError,
    ReadTally,
    canonical_field,
    header_aliases,
    read_rows,
)
from voucher_distributor.domain.recipients import InputRow


def read(data: bytes, chunk_size: int | None = None, **limits: int) -> list[InputRow]:
    if chunk_size is None:
        return list(read_rows([data], **limits))
    return list(read_rows(_chunks(data, chunk_size), **limits))


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def refusal(data: bytes) -> str:
    with pytest.raises(CsvInputError) as caught:
        read(data)
    return str(caught.value)


def csv_bytes(rows: list[list[str]], *, encoding: str = "utf-8", newline: str = "\r\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=newline).writerows(rows)
    return out.getvalue().encode(encoding)


# --- header aliases -----------------------------------------------------------------------------

ALIAS_CASES = [(field, alias) for field, aliases in HEADER_ALIASES.items() for alias in aliases]


@pytest.mark.parametrize(("field", "alias"), ALIAS_CASES)
def test_every_alias_names_its_field(field, alias):
    assert canonical_field(alias) == field
    header = [alias] if field == "email" else ["email", alias]
    cell = "Yes" if field == "reissue" else "Value"
    values = ["Ada@Example.com"] if field == "email" else ["ada@example.com", cell]
    (row,) = read(csv_bytes([header, values]))
    # A language column picks the e-mail's template and stays in the results as typed.
    assert row.extra == ({alias: "Value"} if field == "language" else {})
    expected = {"email": "ada@example.com", "reissue": True}.get(field, "Value")
    assert getattr(row, field) == expected


@pytest.mark.parametrize(
    ("cell", "reissue", "problem"),
    [("yes", True, None), ("TRUE", True, None), ("1", True, None), ("", False, None),
     ("no", False, None), ("0", False, None), ("perhaps", False, "reissue is 'perhaps'")],
)  # fmt: skip
def test_reissue_column_asks_for_a_new_voucher(cell, reissue, problem):
    (row,) = read(csv_bytes([["email", "Reissue"], ["ada@example.com", cell]]))
    assert row.reissue is reissue
    assert (row.problem or "").startswith(problem or "")
    assert (row.problem is None) is (problem is None)


def test_header_aliases_lists_the_required_spellings():
    aliases = header_aliases()
    assert {"email", "e-mail", "email_address", "emailaddress", "mail"} <= set(aliases["email"])
    assert {"first_name", "firstname", "first name", "given_name"} <= set(aliases["first_name"])
    assert {"last_name", "lastname", "surname", "family_name"} <= set(aliases["last_name"])
    assert {"external_id", "externalid", "employee_id"} <= set(aliases["external_id"])
    assert {"partner", "partner_name"} <= set(aliases["partner_name"])
    assert {"program", "program_name"} <= set(aliases["program_name"])


@st.composite
def respelled(draw, alias: str) -> str:
    """The alias as a person might type it: any case, any run of separators, padding."""
    words = alias.replace("-", " ").replace("_", " ").split()
    out = []
    for index, word in enumerate(words):
        if index:
            out.append(draw(st.sampled_from(["", " ", "_", "-", " - ", "__"])))
        out.append("".join(c.upper() if draw(st.booleans()) else c.lower() for c in word))
    return draw(st.sampled_from(["", " ", "\t"])) + "".join(out) + draw(st.sampled_from(["", " "]))


@given(
    st.sampled_from(ALIAS_CASES).flatmap(lambda case: st.tuples(st.just(case), respelled(case[1])))
)
def test_alias_matching_ignores_case_spaces_underscores_and_hyphens(case_and_spelling):
    (field, _alias), spelling = case_and_spelling
    assert canonical_field(spelling) == field
    header = [spelling] if field == "email" else ["email", spelling]
    values = ["ada@example.com"] if field == "email" else ["ada@example.com", "x"]
    (row,) = read(csv_bytes([header, values]))
    assert row.extra == ({spelling.strip(): "x"} if field == "language" else {})


@pytest.mark.parametrize("header", ["name", "id", "status", "e mail x", "mails", "notes"])
def test_other_headers_are_unknown(header):
    assert canonical_field(header) is None


def test_camel_case_request_field_names_are_understood():
    assert canonical_field("firstName") == "first_name"
    assert canonical_field("externalId") == "external_id"
    assert canonical_field("programName") == "program_name"


# --- rows ---------------------------------------------------------------------------------------

HEADER = "email,first_name,last_name,external_id,partner_name,program_name"


def test_a_full_row_is_read_and_normalised():
    data = f"{HEADER}\r\n  Ada.Lovelace@Example.COM , Ada , Lovelace ,E-1, Acme ,Exam\r\n"
    assert read(data.encode()) == [
        InputRow(
            row_number=1,
            email="ada.lovelace@example.com",
            first_name="Ada",
            last_name="Lovelace",
            external_id="E-1",
            partner_name="Acme",
            program_name="Exam",
            extra={},
            problem=None,
            line=2,
        )
    ]


def test_blank_partner_and_program_cells_are_none():
    (row,) = read(f"{HEADER}\nada@example.com,Ada,L,1,  ,\n".encode())
    assert row.partner_name is None
    assert row.program_name is None


def test_names_keep_non_ascii_and_inner_spaces():
    (row,) = read("email,first_name,last_name\nz@example.com, Zoë Ann ,Ñúñez-Müller 李\n".encode())
    assert (row.first_name, row.last_name) == ("Zoë Ann", "Ñúñez-Müller 李")


@pytest.mark.parametrize(
    "address", ["plainaddress", "ada@", "ada@example", "a b@example.com", "ada@@example.com"]
)
def test_malformed_email_is_a_row_problem_and_kept_as_given(address):
    (bad, good) = read(f"email,first_name\n {address} ,Ada\nok@example.com,Bob\n".encode())
    assert bad.problem.startswith("malformed e-mail address: ")
    assert bad.email == address.strip()
    assert bad.first_name == "Ada"
    assert good.problem is None


def test_missing_email_is_a_row_problem():
    (row,) = read(b"email,first_name\n  ,Ada\n")
    assert row.problem == "no e-mail address"
    assert row.email == ""


def test_unknown_columns_are_carried_in_header_order_untrimmed():
    data = (
        b"Cost Centre,email,Notes,first_name,Start Date\n"
        b"CC-1,a@example.com, keep  me ,Ada,2025-01-01\n"
    )
    (row,) = read(data)
    assert list(row.extra.items()) == [
        ("Cost Centre", "CC-1"),
        ("Notes", " keep  me "),
        ("Start Date", "2025-01-01"),
    ]


def test_every_row_carries_every_unknown_column():
    rows = read(b"email,Notes,Team\na@example.com\nb@example.com,x\n")
    assert [row.extra for row in rows] == [{"Notes": "", "Team": ""}, {"Notes": "x", "Team": ""}]


def test_repeated_and_blank_unknown_headers_get_unique_names():
    (row,) = read(b"email,Notes,,notes,Notes (2),\na@example.com,1,2,3,4,\n")
    assert row.extra == {"Notes": "1", "column 3": "2", "notes (2)": "3", "Notes (2) (2)": "4"}


def test_short_rows_are_padded_with_empty_cells():
    (row,) = read(f"{HEADER},Notes\na@example.com,Ada\n".encode())
    assert row.problem is None
    assert (row.last_name, row.partner_name, row.extra) == ("", None, {"Notes": ""})


def test_long_rows_are_a_problem_unless_the_extra_cells_are_blank():
    padded, long = read(b"email,first_name\na@example.com,Ada,, \nb@example.com,Bob,surprise\n")
    assert padded.problem is None
    assert long.problem == "the row has 3 cells but the header names only 2 columns"
    assert long.email == "b@example.com"


def test_blank_rows_are_skipped_but_keep_their_row_number():
    data = b'\r\n\r\nemail\r\na@example.com\r\n\r\n   \r\n,,\r\n""\r\nb@example.com\r\n\r\n'
    assert [(r.row_number, r.email) for r in read(data)] == [
        (1, "a@example.com"),
        (6, "b@example.com"),
    ]


def test_a_row_with_embedded_newlines_is_one_row_number():
    data = b'email,Notes\na@example.com,"line 1\nline 2\r\nline 3"\nb@example.com,x\n'
    rows = read(data)
    assert [r.row_number for r in rows] == [1, 2]
    assert rows[0].extra["Notes"] == "line 1\nline 2\r\nline 3"


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 7])
def test_each_row_knows_the_line_it_starts_on_and_blank_lines_are_counted(chunk_size):
    data = (
        b"\r\n"  # line 1: blank, before the header
        b"email,Notes\r\n"  # line 2: the header
        b'a@example.com,"one\r\ntwo\nthree"\r\n'  # lines 3-5: one row
        b"\r\n"  # line 6
        b",,\n"  # line 7: only delimiters
        b"b@example.com,x\r"  # line 8 (a lone CR ends it)
        b"c@example.com,y\n"  # line 9
    )
    tally = ReadTally()
    chunks = [data] if chunk_size is None else list(_chunks(data, chunk_size))
    rows = list(read_rows(chunks, tally=tally))
    assert [(r.row_number, r.line, r.email) for r in rows] == [
        (1, 3, "a@example.com"),
        (4, 8, "b@example.com"),
        (5, 9, "c@example.com"),
    ]
    assert tally.blank_lines == 3


def test_the_first_data_row_is_line_2_and_an_unreadable_row_keeps_its_line():
    data = b"email\r\na@example.com\r\n" + b"b" * 100 + b"\r\nc@example.com\r\n"
    rows = read(data, max_field_chars=20, max_row_chars=60)
    assert [(r.line, r.problem is None) for r in rows] == [(2, True), (3, False), (4, True)]


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(['"', ",", "\r", "\n", "a", "@", " ", '""', "\r\n"]), max_size=40),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_lines_are_where_the_csv_module_starts_each_record(pieces, points):
    text = "email,Notes\r\n" + "".join(pieces)
    reader = csv.reader(io.StringIO(text, newline=""))
    expected, blank, end_of_last = [], 0, 0
    for cells in reader:
        if reader.line_num > 1:  # past the header
            if "".join(cells).strip():
                expected.append(end_of_last + 1)
            else:
                blank += 1
        end_of_last = reader.line_num
    tally = ReadTally()
    try:
        rows = list(read_rows(cut(text.encode(), points), tally=tally))
    except CsvInputError:
        assert expected == []
        return
    assert [row.line for row in rows] == expected
    assert tally.blank_lines == blank


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_line_endings_crlf_lf_and_lone_cr(newline):
    data = newline.join(["email,first_name", "a@example.com,Ada", "", "b@example.com,Bob", ""])
    rows = read(data.encode(), chunk_size=3)
    assert [(r.row_number, r.email, r.first_name) for r in rows] == [
        (1, "a@example.com", "Ada"),
        (3, "b@example.com", "Bob"),
    ]


def test_mixed_line_endings():
    rows = read(b"email\ra@example.com\r\nb@example.com\nc@example.com")
    assert [r.email for r in rows] == ["a@example.com", "b@example.com", "c@example.com"]


def test_quoted_cells_with_commas_quotes_and_newlines():
    data = b'email,first_name,Notes\n"a@example.com","Ada, ""The Countess""","x\r\ny,z"\n'
    (row,) = read(data)
    assert row.first_name == 'Ada, "The Countess"'
    assert row.extra == {"Notes": "x\r\ny,z"}


def test_a_stray_quote_inside_an_unquoted_cell_is_literal():
    data = b'email,first_name\na@example.com,Dwayne "The Rock\nb@example.com,Bob\n'
    rows = read(data)
    assert [(r.email, r.first_name) for r in rows] == [
        ("a@example.com", 'Dwayne "The Rock'),
        ("b@example.com", "Bob"),
    ]


def test_an_unclosed_quote_is_a_problem_of_the_row_that_swallowed_the_rest():
    rows = read(b'email,first_name\na@example.com,Ada\nb@example.com,"Bob\nc@example.com,Cy\n')
    assert rows[0].problem is None
    assert len(rows) == 2
    assert rows[1].problem is not None
    assert "never closed" in rows[1].problem


# --- delimiters ---------------------------------------------------------------------------------


def test_semicolon_files_from_regional_excel():
    (row,) = read('Email;Vorname;Notes\r\na@example.com;Jürgen;"x;y"\r\n'.encode("cp1252"))
    assert (row.email, row.first_name, row.extra) == ("a@example.com", "Jürgen", {"Notes": "x;y"})


def test_excel_unicode_text_is_utf16_with_tabs():
    data = "email\tfirst_name\r\na@example.com\tZoë\r\n".encode("utf-16")
    (row,) = read(data)
    assert (row.email, row.first_name) == ("a@example.com", "Zoë")


def test_excel_sep_line_names_the_delimiter():
    (row,) = read(b"sep=;\r\nemail;first_name\r\na@example.com;Ada, Countess\r\n")
    assert row.first_name == "Ada, Countess"


# --- encodings ----------------------------------------------------------------------------------

SAMPLE = (
    "email,first_name,last_name\r\nm@example.com,Zoë,Müller\r\nn@example.com,Łukasz,Straße 李\r\n"
)


def _names(rows: list[InputRow]) -> list[tuple[str, str]]:
    return [(r.first_name, r.last_name) for r in rows]


@pytest.mark.parametrize(
    "data",
    [
        SAMPLE.encode("utf-8"),
        codecs.BOM_UTF8 + SAMPLE.encode("utf-8"),
        codecs.BOM_UTF16_LE + SAMPLE.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + SAMPLE.encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"],
)
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 5])
def test_unicode_encodings_read_the_same(data, chunk_size):
    assert _names(read(data, chunk_size)) == [("Zoë", "Müller"), ("Łukasz", "Straße 李")]


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_cp1252_is_the_fallback_when_the_bytes_are_not_utf8(chunk_size):
    data = "email,last_name,Notes\r\nm@example.com,Müller,“quoted” — €5\r\n".encode("cp1252")
    (row,) = read(data, chunk_size)
    assert row.last_name == "Müller"
    assert row.extra == {"Notes": "“quoted” — €5"}


def test_cp1252_is_chosen_even_when_the_first_non_ascii_byte_comes_late():
    ascii_rows = "".join(f"user{i}@example.com,Plain\r\n" for i in range(5000))
    data = f"email,last_name\r\n{ascii_rows}m@example.com,Müller\r\n".encode("cp1252")
    rows = read(data, chunk_size=4096)
    assert rows[-1].last_name == "Müller"


def test_cp1252_bytes_excel_leaves_unassigned_still_decode():
    (row,) = read(b"email,last_name\r\nm@example.com,A\x81B\x8d\xe9\r\n")
    assert row.last_name == "A\x81B\x8dé"


def test_mixed_encodings_within_the_deciding_window_read_as_cp1252():
    data = "email,last_name\r\na@example.com,Müller\r\n".encode() + b"b@example.com,M\xfcller\r\n"
    assert [r.last_name for r in read(data, chunk_size=7)] == ["MÃ¼ller", "Müller"]


def test_invalid_utf8_after_the_encoding_was_decided_fails_mid_stream():
    filler = "".join(f"user{i}@example.com,Plain\r\n" for i in range(4000)).encode()  # ~100 kB
    data = "email,last_name\r\na@example.com,Müller\r\n".encode() + filler + b"b@x.com,M\xfc\r\n"
    rows = read_rows(_chunks(data, 8192))
    assert next(rows).last_name == "Müller"
    with pytest.raises(CsvInputError) as caught:
        list(rows)
    offset = data.index(b"\xfc")
    assert str(caught.value).startswith(f"after data row 3842, byte {offset:,} is not valid UTF-8")


# --- whole-file refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   ", b"\r\n\r\n \t\r\n", codecs.BOM_UTF8, b",,,\r\n"])
def test_an_empty_file_is_refused(data):
    assert "the file is empty" in refusal(data)


@pytest.mark.parametrize("data", [b"email,first_name", b"email,first_name\r\n\r\n,\r\n"])
def test_a_header_without_data_rows_is_refused(data):
    message = refusal(data)
    assert "no data rows" in message
    assert "'email'" in message


def test_no_email_column_lists_the_headers_found():
    message = refusal(b"Name,Mail Addr,Team\nAda,a@example.com,x\n")
    assert "no e-mail column" in message
    assert "'Name', 'Mail Addr', 'Team'" in message
    assert "email_address" in message


def test_no_email_column_message_is_bounded_for_wide_headers():
    header = ",".join(f"col{i}" for i in range(100)).encode()
    message = refusal(header + b"\n" + b"x," * 99 + b"x\n")
    assert "and 80 more" in message
    assert "col99" not in message


def test_a_missing_header_row_is_recognised():
    message = refusal(b"ada@example.com,Ada,Lovelace\nbob@example.com,Bob,B\n")
    assert "no header row" in message
    assert "ada@example.com" not in message  # the message is logged: no recipient address


def test_a_field_named_twice_is_refused():
    message = refusal(b"email,E-Mail,first_name\na@example.com,b@example.com,Ada\n")
    assert "'email' and 'E-Mail'" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "gzip"),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook (.xlsx)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "(.xls)"),
        (b"%PDF-1.7\n", "PDF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL"),
        (b"email\r\na@example.com\x00\r\n", "NUL"),
        ("email,name\r\n".encode("utf-16-le"), "UTF-16 text without a byte-order mark"),
        ("email\r\n".encode("utf-32"), "UTF-32"),
    ],
)
def test_files_that_are_not_text_csv_are_refused(data, expected):
    assert expected in refusal(data)


def test_a_nul_character_later_in_the_file_fails_mid_stream():
    data = b"email\r\n" + b"a@example.com\r\n" * 100 + b"b@example.com\x00\r\n"
    rows = read_rows(_chunks(data, 64))
    assert next(rows).email == "a@example.com"
    with pytest.raises(CsvInputError, match="NUL"):
        list(rows)


def test_reading_starts_lazily_and_refuses_before_the_first_row():
    pulled = []

    def source() -> Iterator[bytes]:
        for block in (b"name\n", b"Ada\n"):
            pulled.append(block)
            yield block

    rows = read_rows(source())
    assert pulled == []
    with pytest.raises(CsvInputError):
        next(rows)
    assert pulled == [b"name\n", b"Ada\n"]


def test_limits_must_make_sense():
    with pytest.raises(ValueError, match="max_field_chars"):
        read_rows([b"email\n"], max_field_chars=100, max_row_chars=50)


# --- oversize input -----------------------------------------------------------------------------


def test_an_oversize_cell_rejects_only_its_row():
    big = "x" * 10_001
    rows = read(f"email,Notes\r\na@example.com,{big}\r\nb@example.com,ok\r\n".encode(), 4096)
    assert rows[0].problem == "the 'Notes' cell is 10,001 characters long; the limit is 10,000"
    assert rows[0].extra == {"Notes": ""}
    assert rows[0].email == "a@example.com"
    assert rows[1].problem is None


@pytest.mark.parametrize("quoted", [False, True])
def test_a_one_megabyte_field_rejects_only_its_row(quoted):
    field = "y\n" * 500_000 if quoted else "y" * 1_000_000
    cell = f'"{field}"' if quoted else field
    data = f"email,Notes\r\na@example.com,ok\r\nb@example.com,{cell}\r\nc@example.com,ok\r\n"
    rows = read(data.encode(), chunk_size=65536)
    assert [r.row_number for r in rows] == [1, 2, 3]
    assert rows[1].problem == "the row is longer than 131,072 characters, so it was not read"
    assert rows[1].email == "b@example.com"  # whose row it was (issue 25): its start says
    assert rows[1].extra == {"Notes": ""}
    assert rows[0].problem is None
    assert rows[2].problem is None


def test_issue25_4_an_over_long_row_keeps_who_it_was_or_its_start():
    """A row over the limit keeps the e-mail, names, partner and program its first 200
    characters hold whole; when they do not hold the e-mail, the problem quotes that start."""
    big = "z" * 200_000
    data = (
        "email,first_name,partner_name,program_name,Notes\r\n"
        f"Ann@Acme.example,Ann,Acme Corp,Spring,{big}\r\n"
        f"{big},Bob,Acme Corp,Spring,ok\r\n"
        "carol@acme.example,Carol,,,ok\r\n"
    ).encode()
    rows = read(data, chunk_size=4096)
    first, second, third = rows
    assert first.problem == "the row is longer than 131,072 characters, so it was not read"
    assert (first.email, first.first_name) == ("ann@acme.example", "Ann")
    assert (first.partner_name, first.program_name) == ("Acme Corp", "Spring")
    assert second.email == ""
    assert second.problem is not None
    assert second.problem.endswith(f"; it starts: {'z' * 200!r}")
    assert third.problem is None
    assert third.partner_name is None  # nothing of an earlier long row carries over


def test_a_huge_quoted_field_is_skipped_in_flat_memory():
    def source() -> Iterator[bytes]:
        yield b'email,Notes\r\na@example.com,"starts ""quoted""\r\n'
        block = b"a long, long line\r\n" * 4000  # ~76 kB
        for _ in range(130):  # ~10 MB in one cell
            yield block
        yield b'ends"\r\nb@example.com,ok\r\n'

    tracemalloc.start()
    try:
        rows = list(read_rows(source()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(r.row_number, r.problem is None) for r in rows] == [(1, False), (2, True)]
    assert peak < 2_000_000


def test_an_oversize_header_is_refused():
    assert "header row is longer" in refusal(b"email," + b"x" * 200_000 + b"\r\n")


# --- streaming ----------------------------------------------------------------------------------


def test_rows_are_read_lazily_from_an_endless_source():
    def endless() -> Iterator[bytes]:
        yield b"email,first_name,Notes\r\n"
        for i in itertools.count():
            yield f'user{i}@example.com,"Name {i}","a\r\nb"\r\n'.encode()

    rows = read_rows(endless())
    first = list(itertools.islice(rows, 10))
    assert [r.email for r in first] == [f"user{i}@example.com" for i in range(10)]


def test_a_large_file_is_consumed_a_block_at_a_time():
    pulled = 0

    def generated() -> Iterator[bytes]:
        nonlocal pulled
        yield b"email,first_name\r\n"
        batch = []
        for i in range(200_000):
            batch.append(f"user{i}@example.com,Name {i}\r\n")
            if len(batch) == 1000:
                pulled += 1
                yield "".join(batch).encode()
                batch = []

    rows = read_rows(generated())
    assert [r.row_number for r in itertools.islice(rows, 10)] == list(range(1, 11))
    assert pulled <= 2


# --- properties ---------------------------------------------------------------------------------

cell_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
emails = st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,5})?@[a-z]{1,8}\.(com|org|de)", fullmatch=True)
records = st.lists(st.tuples(emails, cell_text, cell_text), min_size=1, max_size=8)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom"])


def encode(text: str, encoding: str) -> bytes:
    if encoding == "utf-16-be-bom":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    return text.encode(encoding)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300)
@given(records, encodings, st.sampled_from(["\r\n", "\n", "\r"]), st.data())
def test_any_cell_text_round_trips_through_csv_writer_in_any_chunking(
    recipients, encoding, newline, data
):
    out = io.StringIO()
    # csv.writer quotes a cell holding CR or LF only when its line terminator has that character,
    # so the other line endings are written with every cell quoted.
    quoting = csv.QUOTE_MINIMAL if newline == "\r\n" else csv.QUOTE_ALL
    writer = csv.writer(out, lineterminator=newline, quoting=quoting)
    writer.writerow(["email", "first_name", "Notes"])
    writer.writerows(recipients)
    payload = encode(out.getvalue(), encoding)
    points = data.draw(st.lists(st.integers(min_value=0), max_size=12))
    rows = list(read_rows(cut(payload, points)))
    assert rows == list(read_rows([payload]))
    assert [(r.email, r.first_name, r.extra["Notes"]) for r in rows] == [
        (email, first.strip(), notes) for email, first, notes in recipients
    ]
    assert [r.row_number for r in rows] == list(range(1, len(recipients) + 1))


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=10))
def test_any_bytes_give_rows_or_a_refusal_the_same_in_any_chunking(payload, points):
    def outcome(chunks: list[bytes]) -> object:
        try:
            return list(read_rows(chunks, max_field_chars=20, max_row_chars=60))
        except CsvInputError:
            # The wording may differ (how far reading got before the damage showed); not the
            # verdict.
            return "refused"

    assert outcome(cut(payload, points)) == outcome([payload])


@settings(max_examples=500)
@given(st.lists(st.sampled_from(['"', ",", "\r", "\n", "a", "@", " ", '""', "\r\n"]), max_size=40))
def test_rows_split_as_the_csv_module_splits_them(pieces):
    text = "email,Notes\r\n" + "".join(pieces)
    expected = [
        [*cells, "", ""][:2]
        for cells in list(csv.reader(io.StringIO(text, newline="")))[1:]
        if "".join(cells).strip()
    ]
    try:
        rows = read(text.encode(), chunk_size=1)
    except CsvInputError:
        assert expected == []
        return
    assert [row.extra["Notes"] for row in rows] == [notes for _, notes in expected]


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="cp1252", exclude_characters="\x00"), max_size=20)
    ),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_cp1252_text_round_trips_in_any_chunking(names, points):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "Name"])
    writer.writerows([f"user{i}@example.com", name] for i, name in enumerate(names))
    payload = out.getvalue().encode("cp1252")
    try:
        payload.decode("utf-8")
        assume(payload.isascii())  # non-ASCII that is also valid UTF-8 is read as UTF-8
    except UnicodeDecodeError:
        pass
    if not names:
        return
    rows = list(read_rows(cut(payload, points)))
    assert [row.extra["Name"] for row in rows] == names


# ---------------------------------------------------------------------- issue 15, finding 5


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("jürgen@acme.example", "'ü' is not an ASCII character; Certiverse"),
        ("carol@@acme.example", "it has 2 @ signs; an address has exactly one"),
        ("ann@", "there is no domain after the @"),
        ("ann.acme.example", "there is no @"),
        ("ann smith@acme.example", "it holds a space"),
        ("ann@acme", "the domain 'acme' has no dot"),
    ],
)
def test_an_address_reason_says_what_is_wrong(address: str, says: str) -> None:
    (bad,) = read(f"email\n{address}\n".encode())
    assert bad.problem == f"malformed e-mail address: {says}" or (
        bad.problem is not None and says in bad.problem
    )


@pytest.mark.parametrize(
    "header",
    [
        "E-Mail-Adresse;Vorname;Nachname",
        "courriel;prénom;nom",
        "correo electrónico;nombre;apellido",
        "e-mailadres;voornaam;achternaam",
        "endereço de e-mail;nome;sobrenome",
        "Email;PRENOM;Nom de famille",
    ],
)
def test_common_non_english_headers_map_to_our_columns(header: str) -> None:
    (row,) = read(f"{header}\nann@acme.example;Ann;Smith\n".encode())
    assert (row.email, row.first_name, row.last_name, row.extra) == (
        "ann@acme.example", "Ann", "Smith", {}
    )  # fmt: skip
