"""Read a recipient CSV as a stream of rows, whatever Excel or an HR system saved it as.

The bytes are consumed incrementally (an S3 body's ``iter_chunks()``), so memory stays flat for a
file of any length: at most one row (bounded by ``max_row_chars``) and one input block are held.

Rules, in the order they apply:

* **Not a CSV.** gzip, ZIP/.xlsx, .xls and PDF signatures, UTF-32, and NUL characters make the
  whole file unusable (``CsvInputError``), with a message saying what to save it as instead.
* **Encoding.** A byte-order mark decides: UTF-8, UTF-16 LE or UTF-16 BE. Without one the text is
  read as ASCII until the first non-ASCII byte; the 64 KiB from there decide once for the whole
  file: UTF-8 when they are valid UTF-8, else Windows-1252 (Excel's "CSV" on Western Windows; it
  also covers Latin-1, and never fails). The decision does not depend on how the bytes arrive in
  blocks. A later byte that is not valid UTF-8 in a file judged UTF-8 raises ``CsvInputError``
  mid-stream, after the rows before it were yielded: the caller must treat the whole file as
  failed (it should buy nothing until the file has been read to its end).
* **Lines and quotes.** RFC 4180 with the leniency of Python's ``csv`` module: CRLF, LF or a lone
  CR end a row; quoted cells may hold commas, ``""`` and newlines (kept verbatim); a quote that
  does not open a cell is literal. The delimiter is the first of ``,``, ``;`` and tab under which
  the header row names an e-mail column (Excel's regional "CSV" and "Unicode Text" exports), or
  the one an Excel ``sep=;`` line before the header names.
* **Header.** The first non-blank row. Columns are matched to our fields through
  ``HEADER_ALIASES`` (English, German, French, Spanish, Dutch, Portuguese and Italian names),
  ignoring case, accents, spaces, ``_`` and ``-``. An e-mail column is required; a field
  named twice is an error; other columns are carried in ``InputRow.extra`` (a repeated unknown
  name gets `` (2)``, a blank one ``column N``; blank trailing header cells are ignored).
* **Lines.** Each row knows the line of the file it starts on (``InputRow.line``; the header on
  the first line is line 1): CRLF, LF and a lone CR each end a line, inside quoted cells too, so
  a row after a cell holding newlines starts further down than its row number says.
* **Rows.** Blank rows (nothing but whitespace and delimiters) take a row number but yield
  nothing; they are counted in ``ReadTally.blank_lines`` (blank lines before the header too).
  Short rows are padded with empty cells; non-blank cells beyond the header are a row problem.
  A cell longer than ``max_field_chars`` is a row problem (the cell is emptied); a row longer than
  ``max_row_chars`` is skipped unread and reported as a problem (with its e-mail, names,
  partner and program when its first ``HEAD_CHARS`` characters hold them whole, else those
  characters in the problem, so its results row still says whose it was). An unclosed quote
  is a problem of the row it swallowed the rest of the file into.
* **Whole-file answers.** An empty file and a header with no data rows are errors too. Reading is
  lazy; every file-level problem except those found mid-stream is raised by the first ``next()``,
  before any row is yielded.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from voucher_distributor.domain.csv_decoding import (
    HEAD_CHARS,
    CellSplitter,
    CsvInputError,
    Decoder,
    Framer,
    ReadTally,
    Undecodable,
)
from voucher_distributor.domain.emails import email_problem, is_valid_email, normalise_email
from voucher_distributor.domain.recipients import KNOWN_FIELDS, REISSUE_NO, REISSUE_YES, InputRow

__all__ = [
    "DEFAULT_MAX_FIELD_CHARS",
    "DEFAULT_MAX_ROW_CHARS",
    "HEADER_ALIASES",
    "HEAD_CHARS",
    "CsvInputError",
    "ReadTally",
    "canonical_field",
    "header_aliases",
    "header_key",
    "read_rows",
]

#: Canonical field -> the header spellings we accept (compared after ``header_key``).
HEADER_ALIASES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "email": (
            "email", "e-mail", "email_address", "e-mail address", "emailaddress", "mail",
            # German, French, Spanish, Dutch, Portuguese, Italian
            "E-Mail-Adresse", "Mailadresse", "courriel", "adresse e-mail", "adresse mail",
            "adresse électronique", "correo", "correo electrónico", "e-mailadres", "mailadres",
            "endereço de e-mail", "endereço de email", "indirizzo email", "posta elettronica",
        ),
        "first_name": (
            "first_name", "firstname", "first name", "given_name", "forename",
            "Vorname", "prénom", "nombre", "voornaam", "nome", "primeiro nome",
        ),
        "last_name": (
            "last_name", "lastname", "last name", "surname", "family_name",
            "Nachname", "Familienname", "nom", "nom de famille", "apellido", "apellidos",
            "achternaam", "sobrenome", "apelido", "cognome",
        ),
        "external_id": (
            "external_id", "externalid", "employee_id", "employee_number",
            "Personalnummer", "matricule", "número de empleado", "personeelsnummer",
        ),
        "partner_name": ("partner", "partner_name"),
        "program_name": ("program", "program_name", "programme", "programme_name", "Programm"),
        "reissue": ("reissue", "re-issue", "reissue_voucher", "new_voucher"),
        # The e-mail's language (a template folder such as de/); the column also stays in
        # the results file as it was (it is carried in ``extra`` too).
        "language": (
            "language", "lang", "locale", "Sprache", "langue", "idioma", "taal", "lingua",
            "língua",
        ),
    }
)  # fmt: skip

DEFAULT_MAX_FIELD_CHARS: Final = 10_000
#: Matches ``csv``'s own default field limit, so the parser never refuses a row we accepted.
DEFAULT_MAX_ROW_CHARS: Final = 131_072

_HEADER_NOISE = re.compile(r"[\s_\-\ufeff]+")


def header_key(header: str) -> str:
    """The form header spellings are compared in: no case, accents, spaces, ``_``, ``-`` or
    BOM (``"Prénom"`` and ``"prenom"`` are one key)."""
    decomposed = unicodedata.normalize("NFKD", _HEADER_NOISE.sub("", header).casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


_FIELD_BY_KEY: Final[Mapping[str, str]] = MappingProxyType(
    {header_key(alias): field for field, aliases in HEADER_ALIASES.items() for alias in aliases}
)


def header_aliases() -> Mapping[str, tuple[str, ...]]:
    """Canonical field -> accepted header spellings (for help texts and docs)."""
    return HEADER_ALIASES


def canonical_field(header: str) -> str | None:
    """The field a header names (``"E-Mail Address"`` -> ``"email"``), or None when unknown."""
    return _FIELD_BY_KEY.get(header_key(header))


def read_rows(
    chunks: Iterable[bytes],
    *,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    max_row_chars: int = DEFAULT_MAX_ROW_CHARS,
    tally: ReadTally | None = None,
) -> Iterator[InputRow]:
    """Every data row of the CSV in ``chunks``, read lazily as the rows are asked for.

    Nothing is read before the first ``next()``. That call reads the header and the first data
    row, so a file unusable from its start raises ``CsvInputError`` before any row is yielded;
    damage found later (undecodable bytes, NUL characters) raises it mid-stream. ``tally``, when
    given, counts what was skipped as the rows go by.
    """
    if max_field_chars < 1 or max_row_chars < max_field_chars:
        raise ValueError("need 1 <= max_field_chars <= max_row_chars")
    tally = tally or ReadTally()
    framer = Framer(max_row_chars)
    records = framer.records(Decoder(tally).texts(chunks))
    reader = _RowReader(framer, records, max_field_chars, tally)
    return reader.rows()


# --- records -> rows ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each field sits in a row, as the header says."""

    headers: tuple[str, ...]
    fields: Mapping[str, int]
    extra: tuple[tuple[int, str], ...]

    @property
    def width(self) -> int:
        return len(self.headers)

    def indices(self) -> tuple[int, ...]:
        """Each known field's cell index; a missing field points just past the row (an "")."""
        return tuple(self.fields.get(field, self.width) for field in KNOWN_FIELDS)


def _layout(cells: list[str]) -> _Layout:
    names = [cell.replace("\ufeff", "").strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise CsvInputError("the header row is empty: the first row must name the columns")
    fields: dict[str, int] = {}
    extra: list[tuple[int, str]] = []
    used: set[str] = set()
    for index, name in enumerate(names):
        field = canonical_field(name) if name else None
        if field is None:
            label = name or f"column {index + 1}"
            unique, copy = label, 1
            while unique.casefold() in used:
                copy += 1
                unique = f"{label} ({copy})"
            used.add(unique.casefold())
            extra.append((index, unique))
        elif field in fields:
            raise CsvInputError(
                f"columns {names[fields[field]]!r} and {name!r} both name the {field} field: "
                "keep one of them"
            )
        else:
            fields[field] = index
            if field == "language":  # used for the e-mail and shown in the results as typed
                used.add(name.casefold())
                extra.append((index, name))
    if "email" not in fields:
        raise CsvInputError(_no_email_column(names))
    return _Layout(tuple(names), fields, tuple(extra))


def _no_email_column(names: list[str]) -> str:
    looks_like_data = next((n for n in names if is_valid_email(normalise_email(n))), None)
    if looks_like_data is not None:
        return (
            # The address itself stays out: this message is logged and announced.
            "the file has no header row (its first row holds an e-mail address): "
            "add a first row naming the columns, e.g. email,first_name,last_name"
        )
    shown = ", ".join(repr(name[:40]) for name in names[:20])
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    accepted = ", ".join(HEADER_ALIASES["email"])
    return (
        f"no e-mail column: the header row has {shown}{more}; "
        f"name the e-mail column one of: {accepted}"
    )


#: Excel writes and honours a first line ``sep=;`` naming the delimiter.
_EXCEL_SEPARATOR_HINT = re.compile(r"sep=([,;\t|])", re.IGNORECASE)


#: Delimiters we try on the header, the usual one first.
_DELIMITERS: Final = (",", ";", "\t")


class _RowReader:
    """Turns records into rows by the header's layout, numbering them as it goes."""

    def __init__(
        self,
        framer: Framer,
        records: Iterator[str | None],
        max_field_chars: int,
        tally: ReadTally,
    ) -> None:
        self._framer = framer
        self._records = records
        self._max_field_chars = max_field_chars
        self._tally = tally
        self._splitter = CellSplitter(",")
        self._layout = _Layout((), {}, ())
        self._indices: tuple[int, ...] = ()
        self._row_number = 0
        self._delimiter_hint = ""

    def _next_record(self) -> str | None:
        """The next record; raises StopIteration at the end and CsvInputError on damage."""
        try:
            return next(self._records)
        except Undecodable as damage:
            where = f"after data row {self._row_number}, " if self._row_number else ""
            raise CsvInputError(f"{where}{damage.description}") from None

    def start(self) -> InputRow:
        """Read the header and the first data row, so a useless file fails before any work."""
        header = self._read_header()
        self._layout = _layout(header)
        self._indices = self._layout.indices()
        first = self._next_row()
        if first is None:
            columns = ", ".join(repr(name[:40]) for name in self._layout.headers[:20])
            raise CsvInputError(
                f"the file has a header row ({columns}) but no data rows: add one row per recipient"
            )
        return first

    def _read_header(self) -> list[str]:
        while True:
            try:
                record = self._next_record()
            except StopIteration:
                raise CsvInputError(
                    "the file is empty: it needs a header row and data rows"
                ) from None
            if record is None:
                raise CsvInputError(
                    f"the header row is longer than {self._framer.max_row_chars:,} characters: "
                    "is this a CSV file?"
                )
            if not record.strip():
                self._tally.blank_lines += 1
                continue
            if (hint := _EXCEL_SEPARATOR_HINT.fullmatch(record.strip())) is not None:
                self._delimiter_hint = hint.group(1)
                continue
            if self._framer.unterminated:
                raise CsvInputError('the header row has a quote (") that is never closed')
            cells = self._split_header(record)
            longest = max(map(len, cells), default=0)
            if longest > self._max_field_chars:
                raise CsvInputError(f"a header cell is {longest:,} characters long: is this a CSV?")
            if "".join(cells).strip():
                return cells
            self._tally.blank_lines += 1

    def _split_header(self, record: str) -> list[str]:
        """Split the header with the delimiter under which it names an e-mail column."""
        candidates = (self._delimiter_hint,) if self._delimiter_hint else _DELIMITERS
        chosen = candidates[0]
        for delimiter in candidates:
            cells = CellSplitter(delimiter).split(record)
            if any(canonical_field(cell) == "email" for cell in cells):
                chosen = delimiter
                break
        self._framer.delimiter = chosen
        self._tally.delimiter = chosen
        self._splitter = CellSplitter(chosen)
        return self._splitter.split(record)

    def rows(self) -> Iterator[InputRow]:
        yield self.start()
        while (row := self._next_row()) is not None:
            yield row

    def _next_row(self) -> InputRow | None:
        """The next non-blank data row, or None at the end of the file."""
        while True:
            try:
                record = self._next_record()
            except StopIteration:
                return None
            self._row_number += 1
            if record is None:
                return self._unreadable_row()
            if not record.strip():
                self._tally.blank_lines += 1
                continue
            try:
                cells = self._splitter.split(record)
            except csv.Error as error:
                return self._unreadable_row(f"the row could not be read: {error}")
            if "".join(cells).strip():
                return self._row(cells)
            self._tally.blank_lines += 1

    def _unreadable_row(self, problem: str | None = None) -> InputRow:
        identity: dict[str, str] = {}
        if problem is None:  # too long to read: what its start says of whose row it was
            head = self._framer.record_head
            identity = self._identity(head)
            problem = (
                f"the row is longer than {self._framer.max_row_chars:,} characters, "
                "so it was not read"
            )
            if self._framer.unterminated:
                problem += f"; {_UNCLOSED_QUOTE}"
            if "email" not in identity and head:
                problem += f"; it starts: {head!r}"
        extra = {name: "" for _, name in self._layout.extra}
        return InputRow(
            self._row_number, identity.get("email", ""), identity.get("first_name", ""),
            identity.get("last_name", ""), identity.get("external_id", ""),
            identity.get("partner_name"), identity.get("program_name"), extra, problem,
            line=self._framer.record_line,
        )  # fmt: skip

    def _identity(self, head: str) -> dict[str, str]:
        """The fields of a row too long to read that its first characters hold whole (every
        cell before the last one the head reaches into): its e-mail, names, partner, program."""
        try:
            complete = self._splitter.split(head)[:-1]
        except csv.Error:
            return {}
        found = {}
        for name, index in zip(KNOWN_FIELDS, self._indices, strict=True):
            if index < len(complete) and complete[index].strip() and name != "reissue":
                found[name] = complete[index].strip()
        if "email" in found:
            found["email"] = normalise_email(found["email"])
        return found

    def _row(self, cells: list[str]) -> InputRow:
        layout = self._layout
        problems: list[str] = []
        if self._framer.unterminated:
            problems.append(_UNCLOSED_QUOTE)
        width = layout.width
        if len(cells) > width:
            if "".join(cells[width:]).strip():
                problems.append(
                    f"the row has {len(cells)} cells but the header names only {width} columns"
                )
            del cells[width:]
        elif len(cells) < width:
            cells.extend([""] * (width - len(cells)))
        if max(map(len, cells)) > self._max_field_chars:
            problems.extend(self._empty_oversize_cells(cells))
        cells.append("")  # the cell of every field the file has no column for
        (email_at, first_at, last_at, external_at, partner_at, program_at, reissue_at,
         language_at) = self._indices  # fmt: skip
        email = cells[email_at].strip()
        if not email:
            problems.append("no e-mail address")
        elif (problem := email_problem(normalised := normalise_email(email))) is None:
            email = normalised
        else:
            problems.append(problem)
        reissue_cell = cells[reissue_at].strip().casefold()
        if reissue_cell not in REISSUE_YES | REISSUE_NO:
            problems.append(
                f"reissue is {cells[reissue_at].strip()!r}: write yes, true or 1 to buy a new "
                "voucher, or leave it blank"
            )
        return InputRow(
            row_number=self._row_number,
            email=email,
            first_name=cells[first_at].strip(),
            last_name=cells[last_at].strip(),
            external_id=cells[external_at].strip(),
            partner_name=cells[partner_at].strip() or None,
            program_name=cells[program_at].strip() or None,
            extra={name: cells[index] for index, name in layout.extra},
            problem=problems[0] if problems else None,
            reissue=reissue_cell in REISSUE_YES,
            line=self._framer.record_line,
            language=cells[language_at].strip(),
        )

    def _empty_oversize_cells(self, cells: list[str]) -> list[str]:
        problems = []
        for index, value in enumerate(cells):
            if len(value) > self._max_field_chars:
                problems.append(
                    f"the {self._layout.headers[index] or f'column {index + 1}'!r} cell is "
                    f"{len(value):,} characters long; the limit is {self._max_field_chars:,}"
                )
                cells[index] = ""
        return problems


_UNCLOSED_QUOTE: Final = (
    'a quoted cell is never closed (a " is missing), so the rest of the file was read into this row'
)
