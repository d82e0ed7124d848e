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

import codecs
import csv
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from voucher_distributor.domain.emails import email_problem, is_valid_email, normalise_email
from voucher_distributor.domain.recipients import KNOWN_FIELDS, REISSUE_NO, REISSUE_YES, InputRow


class CsvInputError(ValueError):
    """The whole file is unusable; the message says why and what to do about it."""


@dataclass(slots=True)
class ReadTally:
    """What reading a file passed over without a row to show for it; complete once the rows
    have been read to the end."""

    #: Blank lines (nothing but whitespace and delimiters) skipped, before the header or after.
    blank_lines: int = 0
    #: The delimiter the header was read with (``,``, ``;`` or tab), once it was read: the
    #: results file is written with it, so it opens as the input did.
    delimiter: str = ","
    #: The file began with a byte-order mark.
    bom: bool = False


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
    }
)  # fmt: skip

DEFAULT_MAX_FIELD_CHARS: Final = 10_000
#: Matches ``csv``'s own default field limit, so the parser never refuses a row we accepted.
DEFAULT_MAX_ROW_CHARS: Final = 131_072
#: How much of a row too long to read is kept, so its results row says whose it was.
HEAD_CHARS: Final = 200

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
    framer = _Framer(max_row_chars)
    records = framer.records(_Decoder(tally).texts(chunks))
    reader = _RowReader(framer, records, max_field_chars, tally)
    return reader.rows()


# --- bytes -> text ------------------------------------------------------------------------------

_SIGNATURES: Final = (
    (b"\x1f\x8b", "is gzip-compressed: upload the uncompressed .csv file"),
    (b"PK\x03\x04", "is a ZIP archive or an Excel workbook (.xlsx): save it as 'CSV UTF-8'"),
    (b"PK\x05\x06", "is a ZIP archive: upload the .csv file itself"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "is an Excel 97-2003 workbook (.xls): save it as 'CSV UTF-8'",
    ),
    (b"%PDF-", "is a PDF document, not a CSV file"),
    (codecs.BOM_UTF32_LE, "is UTF-32 text: save it as 'CSV UTF-8'"),
    (codecs.BOM_UTF32_BE, "is UTF-32 text: save it as 'CSV UTF-8'"),
)
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES: Final = 512
#: How many bytes from the first non-ASCII one decide between UTF-8 and Windows-1252.
_DECISION_BYTES: Final = 64 * 1024
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_NOT_TEXT: Final = (
    "contains NUL characters, so it is not a text CSV (a binary file or a spreadsheet in "
    "another format?): save it as 'CSV UTF-8'"
)


def _cp1252_table() -> str:
    """Windows-1252 as browsers read it: the five unassigned bytes map to the same code points."""
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


_CP1252: Final = _cp1252_table()


class _Undecodable(Exception):
    """Damage found mid-stream; the row reader rewords it with where it happened."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class _Decoder:
    """Turns the byte chunks into text chunks, choosing the encoding by the module's rule."""

    def __init__(self, tally: ReadTally) -> None:
        self._tally = tally
        self.encoding = "ascii"  # until a BOM or the first non-ASCII byte decides
        self._decode: Callable[[bytes, bool], str] | None = None
        self._pending_bytes: Callable[[], int] = lambda: 0
        self._held = b""  # undecided: the bytes from the first non-ASCII one, being judged
        self._consumed = 0

    def texts(self, chunks: Iterable[bytes]) -> Iterator[str]:
        blocks = iter(chunks)
        head = b""
        for block in blocks:
            head += block
            if len(head) >= _SNIFF_BYTES:
                break
        self._sniff(head)
        for block in itertools.chain((self._strip_bom(head),), blocks):
            text = self._feed(block, final=False)
            if text:
                yield text
        text = self._feed(b"", final=True)
        if text:
            yield text

    def _sniff(self, head: bytes) -> None:
        for signature, verdict in _SIGNATURES:
            if head.startswith(signature):
                raise CsvInputError(f"the file {verdict}")

    def _strip_bom(self, head: bytes) -> bytes:
        for bom, encoding in _BOMS:
            if head.startswith(bom):
                self._tally.bom = True
                self._use(encoding)
                self._consumed = len(bom)
                return head[len(bom) :]
        sample = head[:_SNIFF_BYTES]
        if b"\x00" in sample:
            even, odd = sample[0::2].count(0), sample[1::2].count(0)
            if min(even, odd) == 0 and max(even, odd) * 4 >= len(sample):
                raise CsvInputError(
                    "the file looks like UTF-16 text without a byte-order mark: "
                    "save it as 'CSV UTF-8'"
                )
            raise CsvInputError(f"the file {_NOT_TEXT}")
        return head

    def _use(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "cp1252":
            self._decode = lambda data, _final: codecs.charmap_decode(data, "strict", _CP1252)[0]
            return
        incremental = codecs.getincrementaldecoder(encoding)("strict")
        self._decode = incremental.decode
        self._pending_bytes = lambda: len(incremental.getstate()[0])

    def _feed(self, data: bytes, *, final: bool) -> str:
        self._consumed += len(data)
        text = ""
        if self._decode is None:
            text, data = self._settle_encoding(data, final=final)
        if self._decode is not None and (data or final):
            pending = self._pending_bytes()
            try:
                text += self._decode(data, final)
            except UnicodeDecodeError as error:
                offset = self._consumed - len(data) - pending + error.start
                raise _Undecodable(
                    f"byte {offset:,} is not valid {self.encoding.upper()} "
                    "(the file mixes encodings): save the file again as 'CSV UTF-8'"
                ) from None
        if "\x00" in text:
            raise _Undecodable(f"the file {_NOT_TEXT}")
        return text

    def _settle_encoding(self, data: bytes, *, final: bool) -> tuple[str, bytes]:
        """Pass ASCII through until the first non-ASCII byte, then choose the encoding.

        Returns the ASCII text and the bytes left for the chosen decoder.
        """
        data, self._held = self._held + data, b""
        if data.isascii():
            return data.decode("ascii"), b""
        match = _NON_ASCII.search(data)
        assert match is not None  # not ASCII, so some byte is >= 0x80
        ascii_part, rest = data[: match.start()].decode("ascii"), data[match.start() :]
        if len(rest) < _DECISION_BYTES and not final:
            # Judge the same window whatever the block sizes, so a file always reads the same.
            self._held = rest
            return ascii_part, b""
        window = rest[:_DECISION_BYTES]
        try:
            codecs.getincrementaldecoder("utf-8")("strict").decode(window, final and window == rest)
        except UnicodeDecodeError:
            self._use("cp1252")
        else:
            self._use("utf-8")
        return ascii_part, rest


# --- text -> records ----------------------------------------------------------------------------

_LINE_END_OR_QUOTE = re.compile(r'[\r\n"]')
_OUTSIDE, _QUOTED, _QUOTE_AT_BLOCK_END = 0, 1, 2


class _Framer:
    """Cuts the text into records (rows) without holding more than one row.

    It mirrors ``csv``'s reading of quotes, so that each record it yields parses to exactly one
    row, and it stops keeping a record that outgrows ``max_row_chars`` while still finding where
    that record ends.
    """

    def __init__(self, max_row_chars: int) -> None:
        self.delimiter = ","
        self.max_row_chars = max_row_chars
        #: Set with the last record when the input ended inside a quoted cell.
        self.unterminated = False
        #: The line the record yielded last starts on (1-based).
        self.record_line = 0
        #: The first ``HEAD_CHARS`` of the record yielded last when it was too long to keep.
        self.record_head = ""
        self._head = ""  # the same, of the record being read, once it outgrew the limit
        self._line = 1  # the line the record being read starts on
        self._breaks = 0  # line breaks inside it so far (in quoted cells)
        self._last_cr = False  # its text so far ends with CR (a CRLF may span two blocks)
        self._state = _OUTSIDE
        self._skip_lf = False  # the last block ended with CR: a leading LF belongs to it
        self._parts: list[str] = []  # the current record's text from earlier blocks
        self._size = 0  # its length, counted on even when the text is no longer kept

    def records(self, texts: Iterable[str]) -> Iterator[str | None]:
        """Each record's text without its line ending; None for a record too long to keep."""
        search = _LINE_END_OR_QUOTE.search
        for text in texts:
            end = len(text)
            mark, pos = self._resume(text)  # mark: where the record's text in this block starts
            while pos < end:
                if self._state == _QUOTED:
                    pos = self._skip_quoted(text, pos)
                    continue
                found = search(text, pos)
                if found is None:
                    break
                at = found.start()
                if text[at] == '"':
                    before = text[at - 1] if at > mark else self._last_char()
                    if before in ("", self.delimiter):
                        self._state = _QUOTED
                    pos = at + 1
                    continue
                yield self._finish(text[mark:at])
                if text[at] == "\r":
                    if at + 1 == end:
                        self._skip_lf = True
                    elif text[at + 1] == "\n":
                        at += 1
                pos = mark = at + 1
            if mark < end:
                self._keep(text[mark:])
        if self._size or self._state != _OUTSIDE:
            self.unterminated = self._state == _QUOTED
            yield self._finish("")

    def _resume(self, text: str) -> tuple[int, int]:
        """Where the record and the scan start in a new block, settling what the last left open."""
        if self._skip_lf:
            self._skip_lf = False
            start = 1 if text[:1] == "\n" else 0
            return start, start
        if self._state == _QUOTE_AT_BLOCK_END and text:
            if text[0] == '"':  # the pair of the quote that ended the last block
                self._state = _QUOTED
                return 0, 1
            self._state = _OUTSIDE
        return 0, 0

    def _skip_quoted(self, text: str, pos: int) -> int:
        """Move past the quoted part of a cell, or to the end of the block if it goes on."""
        quote = text.find('"', pos)
        if quote < 0:
            return len(text)
        if quote + 1 == len(text):
            self._state = _QUOTE_AT_BLOCK_END
        elif text[quote + 1] == '"':  # "" stands for one quote
            return quote + 2
        else:
            self._state = _OUTSIDE
        return quote + 1

    def _last_char(self) -> str:
        return self._parts[-1][-1] if self._parts else ""

    def _count_breaks(self, piece: str) -> None:
        """Count the line breaks inside a record (CRLF, LF or a lone CR, as between records)."""
        if not piece:
            return
        breaks = piece.count("\n") + piece.count("\r") - piece.count("\r\n")
        if self._last_cr and piece[0] == "\n":
            breaks -= 1  # the LF of a CRLF whose CR ended the last piece
        self._breaks += breaks
        self._last_cr = piece[-1] == "\r"

    def _keep(self, piece: str) -> None:
        self._count_breaks(piece)
        self._size += len(piece)
        if self._size <= self.max_row_chars:
            self._parts.append(piece)
        else:
            if not self._head:  # what says whose row it was: its start
                self._head = ("".join(self._parts) + piece)[:HEAD_CHARS]
            self._parts = [piece[-1]]  # too long to keep: only its last character still matters

    def _finish(self, piece: str) -> str | None:
        self._count_breaks(piece)
        self.record_line = self._line
        self._line += self._breaks + 1
        self._breaks = 0
        self._last_cr = False
        size = self._size + len(piece)
        if size > self.max_row_chars:
            record = None
            self.record_head = self._head or ("".join(self._parts) + piece)[:HEAD_CHARS]
        elif self._parts:
            self._parts.append(piece)
            record = "".join(self._parts)
        else:
            record = piece
        self._parts = []
        self._size = 0
        self._head = ""
        return record


class _CellSplitter:
    """Splits one record into cells with a single long-lived ``csv`` reader (fast per row)."""

    def __init__(self, delimiter: str) -> None:
        self._line: str | None = None
        self._reader = csv.reader(self, delimiter=delimiter, strict=False)

    def __iter__(self) -> _CellSplitter:
        return self

    def __next__(self) -> str:
        line, self._line = self._line, None
        if line is None:
            raise StopIteration
        return line

    def split(self, record: str) -> list[str]:
        self._line = record
        try:
            return next(self._reader)
        except StopIteration:
            return []


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
        framer: _Framer,
        records: Iterator[str | None],
        max_field_chars: int,
        tally: ReadTally,
    ) -> None:
        self._framer = framer
        self._records = records
        self._max_field_chars = max_field_chars
        self._tally = tally
        self._splitter = _CellSplitter(",")
        self._layout = _Layout((), {}, ())
        self._indices: tuple[int, ...] = ()
        self._row_number = 0
        self._delimiter_hint = ""

    def _next_record(self) -> str | None:
        """The next record; raises StopIteration at the end and CsvInputError on damage."""
        try:
            return next(self._records)
        except _Undecodable as damage:
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
            cells = _CellSplitter(delimiter).split(record)
            if any(canonical_field(cell) == "email" for cell in cells):
                chosen = delimiter
                break
        self._framer.delimiter = chosen
        self._tally.delimiter = chosen
        self._splitter = _CellSplitter(chosen)
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
        email_at, first_at, last_at, external_at, partner_at, program_at, reissue_at = self._indices
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
